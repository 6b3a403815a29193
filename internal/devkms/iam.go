package devkms

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/enclavekit/kmsproxy/internal/keypolicy"
	"github.com/enclavekit/kmsproxy/internal/yamlfile"
)

// MaxIAMPoliciesFile bounds the IAM policies file devkms reads; devkms's
// own limit, room for hundreds of principals with inline policies.
const MaxIAMPoliciesFile = 4 << 20

// IAMPolicy is one identity-based policy attached to a principal in an IAM
// policies file (--iam-policies).
type IAMPolicy struct {
	// Name names the policy in explanations and logs.
	Name string `yaml:"name"`
	// Policy is the policy document (JSON); PolicyFile names a file that
	// holds one, relative to the IAM policies file.
	Policy     string `yaml:"policy"`
	PolicyFile string `yaml:"policy_file"`
}

// LoadIAMPolicies reads an IAM policies file: a YAML mapping from principal
// ARN (an IAM user or role) to the identity-based policies attached to it,
// each inline or in a file of its own:
//
//	arn:aws:iam::111122223333:role/admin:
//	  - name: KMSAdministrator
//	    policy: |
//	      {"Version": "2012-10-17",
//	       "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}
//	arn:aws:iam::111122223333:role/enclave-parent:
//	  - name: EnclaveParent
//	    policy_file: enclave-parent-policy.json
//	arn:aws:iam::111122223333:user/auditor: []
//
// A role's policies apply to its assumed-role sessions. A principal that is
// not in the file has no identity-based policies: IAM allows it nothing.
// Errors name the file, line and field.
func LoadIAMPolicies(path string) (map[string][]IAMPolicy, error) {
	b, err := readLimited(path, MaxIAMPoliciesFile)
	if err != nil {
		return nil, fmt.Errorf("failed to read IAM policies file: %w", err)
	}
	m, pos, err := parseIAMPolicies(path, b)
	if err != nil {
		return nil, err
	}
	for principal, list := range m {
		for i := range list {
			p := &list[i]
			at := fmt.Sprintf("%s[%d]", principal, i)
			if p.PolicyFile != "" {
				pf := p.PolicyFile
				if !filepath.IsAbs(pf) {
					pf = filepath.Join(filepath.Dir(path), pf)
				}
				pb, err := readLimited(pf, keypolicy.MaxIdentityPolicyBytes+1)
				if err != nil {
					return nil, pos.Errorf(at+".policy_file", "failed to read the policy file: %v", err)
				}
				p.Policy, p.PolicyFile = string(pb), ""
				at += ".policy_file"
			} else {
				at += ".policy"
			}
			if _, err := keypolicy.ParseIdentity([]byte(p.Policy)); err != nil {
				return nil, pos.Errorf(at, "policy %q is not a valid identity-based policy: %s", p.Name, parseErrorText(err))
			}
		}
	}
	return m, nil
}

// ParseIAMPolicies parses the YAML of an IAM policies file named file;
// policy_file entries are left for LoadIAMPolicies to read.
func ParseIAMPolicies(file string, b []byte) (map[string][]IAMPolicy, error) {
	m, _, err := parseIAMPolicies(file, b)
	return m, err
}

func parseIAMPolicies(file string, b []byte) (map[string][]IAMPolicy, yamlfile.Positions, error) {
	m := map[string][]IAMPolicy{}
	pos, err := yamlfile.DecodePositions(file, b, &m)
	if err != nil {
		return nil, pos, err
	}
	for principal, list := range m {
		if err := checkIAMPrincipal(principal); err != nil {
			return nil, pos, pos.Errorf(principal, "%v", err)
		}
		for i, p := range list {
			at := fmt.Sprintf("%s[%d]", principal, i)
			switch {
			case p.Name == "":
				return nil, pos, pos.Errorf(at, "the policy has no name")
			case p.Policy != "" && p.PolicyFile != "":
				return nil, pos, pos.Errorf(at, "give policy or policy_file, not both")
			case p.Policy == "" && p.PolicyFile == "":
				return nil, pos, pos.Errorf(at, "give the policy document in policy or policy_file")
			}
		}
	}
	return m, pos, nil
}

// checkIAMPrincipal accepts the principals IAM attaches policies to: users
// and roles. Sessions take their role's policies; an account's root user
// has none.
func checkIAMPrincipal(p string) error {
	switch {
	case strings.Contains(p, ":assumed-role/"):
		return errors.New("this is a session: list its role (arn:aws:iam::ACCOUNT:role/NAME), whose policies its sessions have")
	case strings.HasSuffix(p, ":root") || accountPattern.MatchString(p):
		return errors.New("this is an account's root user, to which identity-based policies do not apply")
	case !principalPattern.MatchString(p):
		return errors.New("not an IAM user or role ARN, e.g. arn:aws:iam::111122223333:role/admin")
	}
	return nil
}

// identityPolicies are the identity-based policies devkms evaluates, by
// principal.
type identityPolicies struct {
	// assumed is set when no IAM policies were configured: every principal
	// then has allowAll, so that a key policy statement for the account
	// lets the account's principals do what it lists (devkms's behaviour
	// before it evaluated IAM policies).
	assumed bool
	// byUser maps a user ARN to its policies; byRole maps
	// "PARTITION:ACCOUNT:NAME" of a role (path left out, since a session
	// ARN does not carry it) to its policies.
	byUser map[string][]keypolicy.IdentityPolicy
	byRole map[string][]keypolicy.IdentityPolicy
}

// allowAll is the identity-based policy every principal has when devkms
// runs without IAM policies.
var allowAll = keypolicy.IdentityPolicy{
	Name: "devkms default without --iam-policies: kms:* on every resource",
	Policy: func() *keypolicy.Policy {
		p, err := keypolicy.ParseIdentity([]byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}`))
		if err != nil {
			panic(err)
		}
		return p
	}(),
}

// roleKey returns the byRole key of a role or assumed-role ARN, or "".
func roleKey(arn string) string {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 {
		return ""
	}
	res := parts[5]
	var name string
	switch {
	case parts[2] == "iam" && strings.HasPrefix(res, "role/"):
		name = res[strings.LastIndexByte(res, '/')+1:]
	case parts[2] == "sts" && strings.HasPrefix(res, "assumed-role/"):
		name, _, _ = strings.Cut(strings.TrimPrefix(res, "assumed-role/"), "/")
	default:
		return ""
	}
	return parts[1] + ":" + parts[4] + ":" + name
}

// newIdentityPolicies parses the configured policies; configured false
// means devkms runs without any (every principal gets allowAll).
func newIdentityPolicies(m map[string][]IAMPolicy, configured bool) (*identityPolicies, error) {
	ip := &identityPolicies{assumed: !configured, byUser: map[string][]keypolicy.IdentityPolicy{}, byRole: map[string][]keypolicy.IdentityPolicy{}}
	principals := make([]string, 0, len(m))
	for p := range m {
		principals = append(principals, p)
	}
	slices.Sort(principals)
	for _, principal := range principals {
		if err := checkIAMPrincipal(principal); err != nil {
			return nil, fmt.Errorf("IAM policies: %s: %w", shorten(principal), err)
		}
		var parsed []keypolicy.IdentityPolicy
		for _, p := range m[principal] {
			if p.PolicyFile != "" {
				return nil, fmt.Errorf("IAM policies: %s: policy_file must be read with LoadIAMPolicies", principal)
			}
			doc, err := keypolicy.ParseIdentity([]byte(p.Policy))
			if err != nil {
				return nil, fmt.Errorf("IAM policies: %s: policy %q: %s", principal, p.Name, parseErrorText(err))
			}
			parsed = append(parsed, keypolicy.IdentityPolicy{Name: p.Name + " (" + principal + ")", Policy: doc})
		}
		if k := roleKey(principal); k != "" {
			if _, dup := ip.byRole[k]; dup {
				return nil, fmt.Errorf("IAM policies: two entries name the role %s (a role's path is not part of its identity)", shorten(principal))
			}
			ip.byRole[k] = parsed
		} else {
			ip.byUser[principal] = parsed
		}
	}
	return ip, nil
}

// forPrincipal returns the identity-based policies of a caller.
func (ip *identityPolicies) forPrincipal(principal string) []keypolicy.IdentityPolicy {
	if ip.assumed {
		return []keypolicy.IdentityPolicy{allowAll}
	}
	if k := roleKey(principal); k != "" {
		return ip.byRole[k]
	}
	return ip.byUser[principal]
}

// warnings lists the policies' warnings, for the start-up log.
func (ip *identityPolicies) warnings() []string {
	var out []string
	for _, m := range []map[string][]keypolicy.IdentityPolicy{ip.byUser, ip.byRole} {
		for _, list := range m {
			for _, p := range list {
				for _, w := range p.Policy.Warnings() {
					out = append(out, fmt.Sprintf("identity-based policy %s: %s", p.Name, w))
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// parseErrorText is a keypolicy error without the package name.
func parseErrorText(err error) string {
	var pe *keypolicy.ParseError
	if errors.As(err, &pe) {
		return pe.Text()
	}
	return err.Error()
}
