package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Role is an admin's permission level. Roles are ordered: each includes the
// rights of the ones before it.
type Role int

// The admin roles, from least to most privileged.
const (
	RoleNone Role = iota
	// RoleViewer reads: agents, entities, policies, events, explanations.
	RoleViewer
	// RoleOperator also acts: kill, cut, restore, report, create tokens.
	RoleOperator
	// RoleAdmin also applies policy and revokes agents.
	RoleAdmin
)

var roleNames = map[Role]string{RoleViewer: "viewer", RoleOperator: "operator", RoleAdmin: "admin"}

// String returns the role's name ("viewer", "operator", "admin").
func (r Role) String() string {
	if n, ok := roleNames[r]; ok {
		return n
	}
	return "none"
}

// ParseRole parses a role name.
func ParseRole(s string) (Role, error) {
	for r, n := range roleNames {
		if n == s {
			return r, nil
		}
	}
	return RoleNone, fmt.Errorf("parse role %q: want viewer, operator or admin", s)
}

// Identities are written twice into a certificate: as the organizational
// unit and as a URI SAN vigil://KIND/NAME. Both must agree.
const (
	ouAgent   = "vigil-agent"
	ouAdmin   = "vigil-admin"
	uriScheme = "vigil"
)

func agentURI(name string) *url.URL {
	return &url.URL{Scheme: uriScheme, Host: "agent", Path: "/" + name}
}

func adminURI(role Role) *url.URL {
	return &url.URL{Scheme: uriScheme, Host: "admin", Path: "/" + role.String()}
}

// Identity is who a verified client certificate speaks for: an agent (Name
// set, Role none) or an admin (Role set, Name is the certificate's CN).
type Identity struct {
	// Agent is true for agent certificates.
	Agent bool
	// Name is the agent's name, or the admin certificate's common name.
	Name string
	// Role is the admin's role; RoleNone for agents.
	Role Role
	// Serial is the certificate's serial number in decimal.
	Serial string
}

// String returns "agent/NAME" or "admin/NAME(ROLE)", for audit records.
func (id Identity) String() string {
	if id.Agent {
		return "agent/" + id.Name
	}
	return "admin/" + id.Name + "(" + id.Role.String() + ")"
}

// Identify reads the identity out of a certificate the TLS layer has already
// verified against the CA. A certificate whose OU and URI SAN disagree, or
// that carries neither, has no identity.
func Identify(cert *x509.Certificate) (Identity, error) {
	if len(cert.URIs) != 1 || cert.URIs[0].Scheme != uriScheme || len(cert.Subject.OrganizationalUnit) != 1 {
		return Identity{}, ErrNoIdentity
	}
	u, ou := cert.URIs[0], cert.Subject.OrganizationalUnit[0]
	value := strings.TrimPrefix(u.Path, "/")
	id := Identity{Name: cert.Subject.CommonName, Serial: cert.SerialNumber.String()}

	switch {
	case u.Host == "agent" && ou == ouAgent && value == id.Name:
		id.Agent = true
		return id, ValidateName(id.Name)
	case u.Host == "admin" && ou == ouAdmin:
		role, err := ParseRole(value)
		if err != nil {
			return Identity{}, ErrNoIdentity
		}
		id.Role = role
		return id, nil
	}
	return Identity{}, ErrNoIdentity
}

// IssueAdmin creates an admin client certificate for role and writes
// ca.crt, admin.crt and admin.key into outDir (0700 directory, 0600 key),
// the credentials directory vigilctl loads.
func (a *Authority) IssueAdmin(role Role, name, outDir string) error {
	if role == RoleNone {
		return fmt.Errorf("issue admin certificate: no role")
	}
	key, err := newKey()
	if err != nil {
		return err
	}
	subject := pkix.Name{CommonName: name, OrganizationalUnit: []string{ouAdmin}}
	tmpl := template(subject, adminValidity)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	tmpl.URIs = []*url.URL{adminURI(role)}

	der, err := a.sign(tmpl, key.Public())
	if err != nil {
		return err
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return fmt.Errorf("create credentials dir: %w", err)
	}
	if err := writeFile(filepath.Join(outDir, "ca.crt"), a.certPEM, 0o644); err != nil {
		return err
	}
	return writePair(filepath.Join(outDir, "admin.crt"), filepath.Join(outDir, "admin.key"), der, key)
}

// EnsureAdmin creates DIR/admin with an admin-role certificate unless it
// already holds one, and returns the directory.
func (a *Authority) EnsureAdmin() (string, error) {
	dir := filepath.Join(a.dir, "admin")
	if _, err := os.Stat(filepath.Join(dir, "admin.key")); err == nil {
		return dir, nil
	}
	return dir, a.IssueAdmin(RoleAdmin, "admin", dir)
}
