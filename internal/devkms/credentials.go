package devkms

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
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
	if !accessKeyIDPattern.MatchString(c.AccessKeyID) {
		return fmt.Errorf("access key ID %q must be 16 to 128 letters, digits or underscores", shorten(c.AccessKeyID))
	}
	if c.SecretAccessKey == "" {
		return fmt.Errorf("access key %s has no secret_access_key", c.AccessKeyID)
	}
	if !principalPattern.MatchString(c.Principal) {
		return fmt.Errorf("access key %s: principal %q is not an IAM root, user or role ARN or an STS assumed-role ARN", c.AccessKeyID, shorten(c.Principal))
	}
	return nil
}

// LoadCredentials reads a credentials file: a JSON or YAML map from access
// key ID to its secret, optional session token and principal ARN:
//
//	AKIAIOSFODNN7EXAMPLE:
//	  secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
//	  principal: arn:aws:iam::111122223333:role/data-processing
//	  session_token: ""        # optional
//
// Errors never contain secrets.
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
	creds, err := ParseCredentials(b)
	if err != nil {
		return nil, fmt.Errorf("credentials file %s: %w", path, err)
	}
	return creds, nil
}

// ParseCredentials parses the contents of a credentials file (see
// LoadCredentials), sorted by access key ID.
func ParseCredentials(b []byte) ([]Credential, error) {
	var m map[string]Credential
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("no access keys in the file")
		}
		return nil, fmt.Errorf("failed to parse: %s", redactYAMLError(err))
	}
	if len(m) == 0 {
		return nil, errors.New("no access keys in the file")
	}
	out := make([]Credential, 0, len(m))
	for id, c := range m {
		c.AccessKeyID = id
		if err := c.validate(); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Credential) int { return strings.Compare(a.AccessKeyID, b.AccessKeyID) })
	return out, nil
}

// yamlQuoted matches the values yaml.v3 quotes in its type errors
// ("cannot unmarshal !!str `...` into ..."), which could be secrets.
var yamlQuoted = regexp.MustCompile("`[^`]*`")

// redactYAMLError returns a yaml error's text without the values it quotes.
func redactYAMLError(err error) string {
	return yamlQuoted.ReplaceAllString(err.Error(), "(value hidden)")
}
