// Package enroll gives the agent its device identity: on first start it
// trades a one-time token for a device certificate, trusting the server only
// when its chain holds the CA the token pins; later starts load the saved
// certificate, key and CA. It builds the mutual-TLS configuration the stream
// client dials with.
//
// cmd/vigil-agent calls it once at start. It owns the files agent.key
// (0600), agent.crt and ca.crt in the identity directory (0700).
package enroll

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	vigilpb "github.com/vigilsec/vigil/gen/vigil/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Files kept in the identity directory.
const (
	KeyFile  = "agent.key"
	CertFile = "agent.crt"
	CAFile   = "ca.crt"
)

// Errors callers branch on.
var (
	// ErrNotEnrolled means the identity directory holds no certificate yet.
	ErrNotEnrolled = errors.New("agent is not enrolled")
	// ErrPinMismatch means the server's chain does not hold the pinned CA.
	ErrPinMismatch = errors.New("server ca does not match the token's pin: the token was created by another server")
)

// Token is a parsed enrollment token, "vgl1.<id>.<secret>.<ca-sha256-hex>".
type Token struct {
	Raw    string
	ID     string
	CAHash string // lowercase hex SHA-256 of the CA certificate's DER
}

// ParseToken checks a token's form and extracts the CA pin.
func ParseToken(s string) (Token, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 4 || parts[0] != "vgl1" {
		return Token{}, errors.New("token: want vgl1.<id>.<secret>.<ca-sha256>")
	}
	if parts[1] == "" || parts[2] == "" {
		return Token{}, errors.New("token: empty id or secret")
	}
	pin := strings.ToLower(parts[3])
	if b, err := hex.DecodeString(pin); err != nil || len(b) != sha256.Size {
		return Token{}, errors.New("token: ca pin is not a hex sha-256")
	}
	return Token{Raw: strings.TrimSpace(s), ID: parts[1], CAHash: pin}, nil
}

// Credentials are the agent's certificate, key and trusted CA. They are
// read-only after Load or Enroll.
type Credentials struct {
	Cert  tls.Certificate
	CA    *x509.CertPool
	CAPEM []byte
	Name  string // the certificate's common name: the agent's name
}

// Load reads the credentials saved in dir; ErrNotEnrolled when there are
// none.
func Load(dir string) (*Credentials, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CertFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotEnrolled
	}
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("read ca: %w", err)
	}
	return newCredentials(certPEM, keyPEM, caPEM)
}

func newCredentials(certPEM, keyPEM, caPEM []byte) (*Credentials, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load key pair: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("load ca: no certificate in PEM")
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	cert.Leaf = leaf
	return &Credentials{Cert: cert, CA: pool, CAPEM: caPEM, Name: leaf.Subject.CommonName}, nil
}

// Enroll trades token for a device certificate from the server at addr and
// saves it in dir (created 0700; the key is written 0600). The connection
// is trusted only when the server's chain holds the CA whose SHA-256 the
// token pins, and the CA the server returns must be that CA.
func Enroll(ctx context.Context, addr, token, name, dir string) (*Credentials, error) {
	tok, err := ParseToken(token)
	if err != nil {
		return nil, err
	}
	key, csr, err := newRequest(name)
	if err != nil {
		return nil, err
	}

	req := &vigilpb.EnrollRequest{Token: tok.Raw, Name: name, CsrDer: csr}
	resp, err := callEnroll(ctx, addr, tok, req)
	if err != nil {
		return nil, err
	}
	if err := checkIssued(resp, tok.CAHash, key); err != nil {
		return nil, err
	}
	return save(dir, key, resp)
}

func callEnroll(ctx context.Context, addr string, tok Token,
	req *vigilpb.EnrollRequest) (*vigilpb.EnrollResponse, error) {
	var pinErr atomic.Pointer[error]
	verify := pinnedVerifier(tok.CAHash)
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by the pin check below
		VerifyPeerCertificate: func(raw [][]byte, chains [][]*x509.Certificate) error {
			err := verify(raw, chains)
			if err != nil {
				pinErr.Store(&err)
			}
			return err
		},
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()

	resp, err := vigilpb.NewEnrollmentServiceClient(conn).Enroll(ctx, req)
	if p := pinErr.Load(); p != nil {
		return nil, fmt.Errorf("verify server %s: %w", addr, *p)
	}
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	return resp, nil
}

// pinnedVerifier accepts a server chain that holds a CA certificate with the
// pinned hash and whose leaf that CA issued for server authentication.
func pinnedVerifier(pin string) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return ErrPinMismatch
		}
		var ca *x509.Certificate
		for _, der := range raw {
			if fingerprint(der) == pin {
				ca, _ = x509.ParseCertificate(der)
			}
		}
		if ca == nil || !ca.IsCA {
			return fmt.Errorf("%w (the server must send its CA certificate in its TLS chain)",
				ErrPinMismatch)
		}

		leaf, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return fmt.Errorf("parse server certificate: %w", err)
		}
		return verifyServer(leaf, ca)
	}
}

// verifyServer checks that ca issued leaf for server authentication. The
// host name is not checked: the private CA and the server-auth usage are
// what tell the server apart from agents.
func verifyServer(leaf, ca *x509.Certificate) error {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	opts := x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if _, err := leaf.Verify(opts); err != nil {
		return fmt.Errorf("verify server certificate: %w", err)
	}
	return nil
}

// ClientTLS returns the mutual-TLS configuration for the agent's stream:
// the device certificate, and a server chain verified against the saved CA
// for server authentication.
func (c *Credentials) ClientTLS() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{c.Cert},
		InsecureSkipVerify: true, // replaced by VerifyPeerCertificate
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("server sent no certificate")
			}
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return fmt.Errorf("parse server certificate: %w", err)
			}
			inter := x509.NewCertPool()
			for _, der := range raw[1:] {
				if cert, err := x509.ParseCertificate(der); err == nil {
					inter.AddCert(cert)
				}
			}
			opts := x509.VerifyOptions{
				Roots: c.CA, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			}
			_, err = leaf.Verify(opts)
			return err
		},
	}
}

// newRequest creates the agent's ECDSA P-256 key and a certificate request.
func newRequest(name string) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}
	csr, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate request: %w", err)
	}
	return key, csr, nil
}

// checkIssued verifies that the returned CA is the pinned one, that it
// issued the certificate, and that the certificate is for key.
func checkIssued(resp *vigilpb.EnrollResponse, pin string, key *ecdsa.PrivateKey) error {
	caBlock, _ := pem.Decode(resp.CaPem)
	if caBlock == nil || fingerprint(caBlock.Bytes) != pin {
		return fmt.Errorf("enroll response: %w", ErrPinMismatch)
	}
	ca, err := x509.ParseCertificate(caBlock.Bytes)
	if err != nil {
		return fmt.Errorf("parse ca: %w", err)
	}

	block, _ := pem.Decode(resp.CertificatePem)
	if block == nil {
		return errors.New("enroll response: no certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("parse certificate: %w", err)
	}
	if err := cert.CheckSignatureFrom(ca); err != nil {
		return fmt.Errorf("check certificate issuer: %w", err)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return errors.New("enroll response: certificate is not for the agent's key")
	}
	return nil
}

// save writes the key (0600), then the CA, then the certificate, whose
// presence marks the agent enrolled.
func save(dir string, key *ecdsa.PrivateKey, resp *vigilpb.EnrollResponse) (*Credentials, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create identity dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("restrict identity dir: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})

	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{{KeyFile, keyPEM, 0o600}, {CAFile, resp.CaPem, 0o644}, {CertFile, resp.CertificatePem, 0o644}}
	for _, f := range files {
		if err := writeFile(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return nil, err
		}
	}
	return newCredentials(resp.CertificatePem, keyPEM, resp.CaPem)
}

// writeFile writes data to a temporary file, fsyncs and renames it.
func writeFile(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}
