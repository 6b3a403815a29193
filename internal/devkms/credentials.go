package devkms

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/enclavekit/kmsproxy/internal/yamlfile"
)

// MaxCredentialsFile bounds the credentials file devkms reads; devkms's own
// limit, enough for thousands of access keys.
const MaxCredentialsFile = 1 << 20

// Credential is one access key devkms accepts and the principal it stands
// for.
type Credential struct {
	// AccessKeyID is the key callers put in the SigV4 Credential scope.
	AccessKeyID string `yaml:"-" json:"-"`
	// SecretAccessKey signs the caller's requests.
	SecretAccessKey string `yaml:"secret_access_key"`
	// SessionToken, when set, must arrive in X-Amz-Security-Token (as with
	// temporary credentials).
	SessionToken string `yaml:"session_token"`
	// Principal is the caller's ARN as key policies see it, e.g.
	// arn:aws:iam::111122223333:role/data-processing.
	Principal string `yaml:"principal"`
}

var (
	// accessKeyIDPattern: "Access key IDs ... contain 16 to 128 characters,
	// upper case letters and digits" (IAM API reference, AccessKey:
	// "Length Constraints: Minimum length of 16. Maximum length of 128.
	// Pattern: [\w]+").
	accessKeyIDPattern = regexp.MustCompile(`^\w{16,128}$`)
	// principalPattern accepts the principals a key policy can name for a
	// caller: an account root, an IAM user or role, or an STS
	// assumed-role session.
	principalPattern = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov):(iam::[0-9]{12}:(root|user/.+|role/.+)|sts::[0-9]{12}:assumed-role/[^/]+/.+)$`)
)

func (c Credential) validate() error {
	if field, reason := c.check(); field != "" {
		return errors.New(reason)
	}
	return nil
}

// check says which field of c is wrong ("" for the access key ID itself)
// and why; field is "-" when all is well.
func (c Credential) check() (field, reason string) {
	if !accessKeyIDPattern.MatchString(c.AccessKeyID) {
		return "access key ID", fmt.Sprintf("access key ID %q must be 16 to 128 letters, digits or underscores", shorten(c.AccessKeyID))
	}
	if c.SecretAccessKey == "" {
		return "secret_access_key", fmt.Sprintf("access key %s has no secret_access_key", c.AccessKeyID)
	}
	if !principalPattern.MatchString(c.Principal) {
		return "principal", fmt.Sprintf("access key %s: principal %q is not an IAM root, user or role ARN or an STS assumed-role ARN", c.AccessKeyID, shorten(c.Principal))
	}
	return "", ""
}

// LoadCredentials reads a credentials file: a YAML (or JSON) mapping from
// access key ID to its secret, optional session token and principal ARN:
//
//	AKIAIOSFODNN7EXAMPLE:
//	  secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
//	  principal: arn:aws:iam::111122223333:role/data-processing
//	  session_token: ""        # optional
//
// Errors name the file, the line and the field, and never contain secrets.
func LoadCredentials(path string) ([]Credential, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to open credentials file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxCredentialsFile+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read credentials file: %w", err)
	}
	if len(b) > MaxCredentialsFile {
		return nil, fmt.Errorf("credentials file %s is larger than %d bytes", path, MaxCredentialsFile)
	}
	return ParseCredentials(path, b)
}

// ParseCredentials parses the contents of the credentials file named file
// (see LoadCredentials), sorted by access key ID.
func ParseCredentials(file string, b []byte) ([]Credential, error) {
	var m map[string]Credential
	pos, err := yamlfile.DecodePositions(file, b, &m)
	if err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("credentials file %s: no access keys in the file", file)
	}
	out := make([]Credential, 0, len(m))
	for id, c := range m {
		c.AccessKeyID = id
		switch field, reason := c.check(); field {
		case "":
		case "access key ID":
			return nil, pos.Errorf(id, "%s", reason)
		default:
			return nil, pos.Errorf(id+"."+field, "%s", reason)
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Credential) int { return strings.Compare(a.AccessKeyID, b.AccessKeyID) })
	return out, nil
}
