package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
)

// fanOutDialers bounds the TLS handshakes the worker runs at once.
const fanOutDialers = 64

// workFanout: ADDR CREDS. Connects every agent in the CREDS file to the
// server at ADDR, each on its own connection with its own certificate,
// acknowledges every table and diff, and disconnects when stdin closes.
func workFanout(args []string) error {
	if len(args) != 2 {
		return errors.New("want ADDR CREDS")
	}
	raw, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	var c fanOutCreds
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("decode credentials: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CA)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sem := make(chan struct{}, fanOutDialers)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for i, name := range c.Names {
		pair, err := tls.X509KeyPair(c.Certs[i], c.Key)
		if err != nil {
			return fmt.Errorf("agent %s key pair: %w", name, err)
		}
		cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, Certificates: []tls.Certificate{pair}}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := simulateAgent(ctx, args[0], name, cfg, sem); err != nil && ctx.Err() == nil {
				select {
				case errc <- fmt.Errorf("agent %s: %w", name, err):
				default:
				}
			}
		}()
	}

	select {
	case <-stdinClosed():
	case err = <-errc:
	}
	cancel()
	wg.Wait()
	return err
}

// simulateAgent opens one agent's stream, says hello, releases its dial
// slot once the first table arrives, and acknowledges every table and diff
// until ctx ends.
func simulateAgent(ctx context.Context, addr, name string, cfg *tls.Config, sem chan struct{}) error {
	released := false
	release := func() {
		if !released {
			released = true
			<-sem
		}
	}
	defer release()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithReadBufferSize(4096), grpc.WithWriteBufferSize(4096))
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := vigilpb.NewAgentServiceClient(conn).Connect(ctx)
	if err != nil {
		return err
	}
	hello := &vigilpb.Hello{Name: name, AgentVersion: "bench"}
	if err := stream.Send(&vigilpb.AgentMessage{Body: &vigilpb.AgentMessage_Hello{Hello: hello}}); err != nil {
		return err
	}

	for {
		msg, err := stream.Recv()
		if err != nil {
			return err
		}
		var version uint64
		switch {
		case msg.GetTable() != nil:
			version = msg.GetTable().GetVersion()
			release()
		case msg.GetDiff() != nil:
			version = msg.GetDiff().GetVersion()
		default:
			continue
		}
		ack := &vigilpb.AgentMessage_TableAck{TableAck: &vigilpb.TableAck{Version: version}}
		if err := stream.Send(&vigilpb.AgentMessage{Body: ack}); err != nil {
			return err
		}
	}
}
