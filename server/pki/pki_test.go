package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestOpenCreatesPrivateFiles(t *testing.T) {
	dir := t.TempDir()
	ca, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	adminDir, err := ca.EnsureAdmin()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.ServerCertificate(nil); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		path string
		mode os.FileMode
	}{
		{name: "pki dir", path: filepath.Join(dir, "pki"), mode: 0o700 | os.ModeDir},
		{name: "ca key", path: filepath.Join(dir, "pki", "ca.key"), mode: 0o600},
		{name: "server key", path: filepath.Join(dir, "pki", "server.key"), mode: 0o600},
		{name: "admin dir", path: adminDir, mode: 0o700 | os.ModeDir},
		{name: "admin key", path: filepath.Join(adminDir, "admin.key"), mode: 0o600},
		{name: "admin ca", path: filepath.Join(adminDir, "ca.crt"), mode: 0o644},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fi, err := os.Stat(tt.path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != tt.mode {
				t.Fatalf("mode %v, want %v", fi.Mode(), tt.mode)
			}
		})
	}

	again, err := Open(dir)
	if err != nil || again.Fingerprint() != ca.Fingerprint() {
		t.Fatalf("reopened CA differs: %v", err)
	}
}

func TestIdentityRoundTrip(t *testing.T) {
	ca, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cert func(t *testing.T) *x509.Certificate
		want Identity
	}{
		{name: "viewer", cert: adminLeaf(ca, RoleViewer), want: Identity{Name: "ops", Role: RoleViewer}},
		{name: "operator", cert: adminLeaf(ca, RoleOperator), want: Identity{Name: "ops", Role: RoleOperator}},
		{name: "admin", cert: adminLeaf(ca, RoleAdmin), want: Identity{Name: "ops", Role: RoleAdmin}},
		{name: "agent", cert: agentLeaf(ca, "laptop-7"), want: Identity{Agent: true, Name: "laptop-7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := tt.cert(t)
			if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Fatalf("verify against the CA: %v", err)
			}
			got, err := Identify(cert)
			tt.want.Serial = cert.SerialNumber.String()
			if err != nil || got != tt.want {
				t.Fatalf("identity %+v err %v, want %+v", got, err, tt.want)
			}
		})
	}
}

func TestIdentifyRejectsMismatch(t *testing.T) {
	ca, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cert := agentLeaf(ca, "laptop")(t)
	cert.Subject.CommonName = "other"
	if _, err := Identify(cert); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("CN differing from the URI SAN: err %v, want ErrNoIdentity", err)
	}
	cert = agentLeaf(ca, "laptop")(t)
	cert.Subject.OrganizationalUnit = []string{ouAdmin}
	if _, err := Identify(cert); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("agent URI with admin OU: err %v, want ErrNoIdentity", err)
	}
}

func TestServerCertificateHosts(t *testing.T) {
	ca, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	first, _, err := ca.ServerCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	same, _, _ := ca.ServerCertificate(nil)
	if string(same) != string(first) {
		t.Fatal("server certificate reissued without a new host")
	}
	withHost, keyPEM, err := ca.ServerCertificate([]string{"10.9.8.7"})
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(withHost, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if err := leaf.VerifyHostname("10.9.8.7"); err != nil {
		t.Fatalf("new host missing: %v", err)
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{name: "laptop-7", ok: true},
		{name: "svc.db_1", ok: true},
		{name: "", ok: false},
		{name: "-lead", ok: false},
		{name: "a/b", ok: false},
		{name: "a b", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := ValidateName(tt.name); (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func adminLeaf(ca *Authority, role Role) func(t *testing.T) *x509.Certificate {
	return func(t *testing.T) *x509.Certificate {
		dir := t.TempDir()
		if err := ca.IssueAdmin(role, "ops", dir); err != nil {
			t.Fatal(err)
		}
		pemBytes, err := os.ReadFile(filepath.Join(dir, "admin.crt"))
		if err != nil {
			t.Fatal(err)
		}
		return parsePEM(t, pemBytes)
	}
}

func agentLeaf(ca *Authority, name string) func(t *testing.T) *x509.Certificate {
	return func(t *testing.T) *x509.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader,
			&x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored", OrganizationalUnit: []string{ouAdmin}}}, key)
		if err != nil {
			t.Fatal(err)
		}
		certPEM, _, err := ca.SignAgent(name, csr)
		if err != nil {
			t.Fatal(err)
		}
		return parsePEM(t, certPEM)
	}
}

func parsePEM(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(b)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
