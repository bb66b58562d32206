package ctlclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// DefaultCredentialsDir is where `make run` and a first server start in the
// repository leave the admin credentials, relative to the working directory.
const DefaultCredentialsDir = "var/server/admin"

// Files in a credentials directory.
const (
	CAFile   = "ca.crt"    // the server's CA certificate (PEM)
	CertFile = "admin.crt" // the admin client certificate (PEM)
	KeyFile  = "admin.key" // the admin client key (PEM)
)

// ErrNoCredentials means no directory was given and the default one does not
// exist.
var ErrNoCredentials = errors.New("no credentials: pass --credentials DIR or set VIGIL_CREDENTIALS")

// CredentialsDir returns dir when it is set, else DefaultCredentialsDir when
// that exists, else ErrNoCredentials.
func CredentialsDir(dir string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	if st, err := os.Stat(DefaultCredentialsDir); err == nil && st.IsDir() {
		return DefaultCredentialsDir, nil
	}
	return "", ErrNoCredentials
}

// LoadTLS reads the credentials in dir and returns a client configuration
// that presents the admin certificate and trusts only the CA in dir. The
// server's name is verified by the caller's transport against the address
// dialed.
func LoadTLS(dir string) (*tls.Config, error) {
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("read ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("parse ca %s: no PEM certificate", filepath.Join(dir, CAFile))
	}

	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("load admin certificate from %s: %w", dir, err)
	}
	return &tls.Config{
		RootCAs:      pool,
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13,
	}, nil
}
