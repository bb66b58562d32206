// Package pki is the server's certificate authority. It creates and loads the
// CA, the server's TLS certificate and admin client certificates in the data
// directory, signs agents' certificate requests at enrollment, and reads the
// identity (agent name or admin role) back out of a verified client
// certificate. It owns the key files under DIR/pki and DIR/admin; the server
// (cmd/vigil-server and server/api) is its only caller.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Validity periods of the certificates the authority issues.
const (
	caValidity     = 10 * 365 * 24 * time.Hour
	serverValidity = 2 * 365 * 24 * time.Hour
	adminValidity  = 365 * 24 * time.Hour
	agentValidity  = 365 * 24 * time.Hour
)

// Errors returned for certificates that carry no usable identity.
var (
	// ErrNoIdentity means a certificate names neither an agent nor an admin.
	ErrNoIdentity = errors.New("certificate carries no vigil identity")
	// ErrBadName means an agent name is empty or malformed.
	ErrBadName = errors.New("invalid agent name")
)

// Authority is the server's CA. It is read-only after Open and safe for
// concurrent use.
type Authority struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	dir     string
}

// Open loads the CA from dir/pki, creating it (0700 directory, 0600 key) when
// absent.
func Open(dir string) (*Authority, error) {
	pkiDir := filepath.Join(dir, "pki")
	certPath := filepath.Join(pkiDir, "ca.crt")
	keyPath := filepath.Join(pkiDir, "ca.key")
	if _, err := os.Stat(certPath); errors.Is(err, os.ErrNotExist) {
		if err := createCA(pkiDir, certPath, keyPath); err != nil {
			return nil, err
		}
	}

	certPEM, cert, key, err := loadPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	return &Authority{cert: cert, certPEM: certPEM, key: key, dir: dir}, nil
}

func createCA(pkiDir, certPath, keyPath string) error {
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return fmt.Errorf("create pki dir: %w", err)
	}
	key, err := newKey()
	if err != nil {
		return err
	}
	tmpl := template(pkix.Name{CommonName: "vigil ca"}, caValidity)
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign

	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("create ca certificate: %w", err)
	}
	return writePair(certPath, keyPath, der, key)
}

// CertDER returns the CA certificate in DER form.
func (a *Authority) CertDER() []byte { return a.cert.Raw }

// CertPEM returns the CA certificate in PEM form.
func (a *Authority) CertPEM() []byte { return a.certPEM }

// Pool returns a pool holding only the CA certificate.
func (a *Authority) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(a.cert)
	return pool
}

// Fingerprint returns the lowercase hex SHA-256 of the CA certificate's DER,
// the value enrollment tokens carry so agents can pin the CA.
func (a *Authority) Fingerprint() string {
	return Fingerprint(a.cert.Raw)
}

// Fingerprint returns the lowercase hex SHA-256 of a certificate's DER.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

func newKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return key, nil
}

func template(subject pkix.Name, validity time.Duration) *x509.Certificate {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("read random serial: %v", err))
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(validity),
	}
}

func (a *Authority) sign(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, pub, a.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	return der, nil
}

// ServerCertificate loads the server's TLS certificate from dir/pki, issuing
// it when absent for localhost, 127.0.0.1, ::1 and the extra hosts (DNS names
// or IP addresses). A certificate that lacks one of the hosts is reissued.
func (a *Authority) ServerCertificate(hosts []string) (certPEM, keyPEM []byte, err error) {
	certPath := filepath.Join(a.dir, "pki", "server.crt")
	keyPath := filepath.Join(a.dir, "pki", "server.key")
	hosts = append([]string{"localhost", "127.0.0.1", "::1"}, hosts...)
	if _, cert, _, err := loadPair(certPath, keyPath); err == nil && covers(cert, hosts) {
		return readPair(certPath, keyPath)
	}

	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	tmpl := template(pkix.Name{CommonName: "vigil server"}, serverValidity)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}

	der, err := a.sign(tmpl, key.Public())
	if err != nil {
		return nil, nil, err
	}
	if err := writePair(certPath, keyPath, der, key); err != nil {
		return nil, nil, err
	}
	return readPair(certPath, keyPath)
}

func covers(cert *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if cert.VerifyHostname(h) != nil {
			return false
		}
	}
	return time.Now().Before(cert.NotAfter)
}

// SignAgent signs a PKCS#10 request (DER) for the named agent and returns
// the certificate in PEM form with its serial number (decimal). The request's
// signature must verify; its subject is ignored and replaced by the name.
func (a *Authority) SignAgent(name string, csrDER []byte) (certPEM []byte, serial string, err error) {
	if err := ValidateName(name); err != nil {
		return nil, "", err
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, "", fmt.Errorf("parse certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, "", fmt.Errorf("check certificate request signature: %w", err)
	}

	tmpl := template(pkix.Name{CommonName: name, OrganizationalUnit: []string{ouAgent}}, agentValidity)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	tmpl.URIs = []*url.URL{agentURI(name)}
	der, err := a.sign(tmpl, csr.PublicKey)
	if err != nil {
		return nil, "", err
	}
	return encodeCert(der), tmpl.SerialNumber.String(), nil
}

// ValidateName checks an agent name: 1 to 63 characters of [a-zA-Z0-9._-],
// starting with a letter or digit.
func ValidateName(name string) error {
	if len(name) == 0 || len(name) > 63 {
		return fmt.Errorf("%w: length must be 1 to 63", ErrBadName)
	}
	for i, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !ok && (i == 0 || (c != '.' && c != '_' && c != '-')) {
			return fmt.Errorf("%w: character %q at %d", ErrBadName, c, i)
		}
	}
	return nil
}
