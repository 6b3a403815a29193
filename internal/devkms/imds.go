package devkms

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// devkms can stand in for the EC2 instance metadata service (IMDS), so that
// kmsproxyd's --credentials imds (and any AWS SDK) can be run on a laptop:
// it serves IMDSv2 as an instance with HttpTokens=required does, an instance
// profile role whose temporary credentials rotate as EC2's do, and the
// region and identity of a made-up instance. devkms's SigV4 verification
// accepts each set of role credentials until it expires and maps it to the
// role's assumed-role session ARN, so key policies and IAM policies see the
// instance role as they would on EC2.

// Defaults and bounds of the --imds-* flags.
const (
	// DefaultIMDSRole is the role kmsproxy's documentation and demo give
	// the parent instance.
	DefaultIMDSRole = "enclave-parent"
	// DefaultIMDSInstanceID is a made-up instance ID in EC2's format (the
	// one AWS's own documentation uses).
	DefaultIMDSInstanceID = "i-0123456789abcdef0"
	// DefaultIMDSCredentialLifetime is how long each set of role credentials
	// lives unless --imds-credential-lifetime says otherwise.
	DefaultIMDSCredentialLifetime = time.Hour
	// IMDSRotationLead is how long before the current credentials expire
	// the next set is served. EC2 User Guide, "Retrieve security
	// credentials from instance metadata": "We make new credentials
	// available at least five minutes before the expiration of the old
	// credentials." Lifetimes under ten minutes get half their lifetime
	// instead (rotationLead).
	IMDSRotationLead = 5 * time.Minute
	// MinIMDSCredentialLifetime is the shortest --imds-credential-lifetime.
	// The next set comes out half a lifetime (one minute) before the
	// current one expires. Clients must see it before they give up on the
	// old one: kmsproxyd polls IMDS at most every 30 seconds once its
	// credentials are within five minutes of expiry, and stops using
	// credentials 30 seconds before their Expiration
	// (internal/credentials: MinInterval, ExpiryMargin). One minute of
	// overlap is the least that holds one such poll between the new set's
	// arrival and the old one's end.
	MinIMDSCredentialLifetime = 2 * time.Minute
	// MaxIMDSCredentialLifetime is the longest --imds-credential-lifetime:
	// the longest session an IAM role can have (IAM API Reference,
	// CreateRole, MaxSessionDuration: 3600 to 43200 seconds).
	MaxIMDSCredentialLifetime = 12 * time.Hour
)

// rotationLead returns how long before the current credentials expire the
// next set is served.
func rotationLead(lifetime time.Duration) time.Duration {
	return min(IMDSRotationLead, lifetime/2)
}

// IMDSv2 as EC2 documents it (EC2 User Guide, "Use IMDSv2" and "Retrieve
// instance metadata"): a PUT to /latest/api/token with a TTL header returns
// a session token; every GET carries it.
const (
	imdsTokenPath = "/latest/api/token"
	// Header names as the EC2 User Guide spells them (HTTP header names
	// are case-insensitive; Go canonicalizes them on the wire).
	imdsTokenTTLHeader = "X-aws-ec2-metadata-token-ttl-seconds"
	imdsTokenHeader    = "X-aws-ec2-metadata-token"
	// A token lives "a minimum of one second and a maximum of six hours"
	// (EC2 User Guide, "How Instance Metadata Service Version 2 works").
	imdsMinTokenTTL = 1
	imdsMaxTokenTTL = 21600
)

// Limits on what an IMDS client sends.
const (
	// imdsMaxHeaderBytes bounds a request's header block. IMDS requests
	// are a request line, Host, one token header (devkms's tokens are
	// imdsTokenLen bytes) and a few standard headers, well under
	// 1 KiB; 8 KiB leaves room for whatever a proxy or SDK adds. net/http
	// answers 431 past it (it allows 4096 bytes of slack on top).
	imdsMaxHeaderBytes = 8 << 10
	// imdsMaxRequestBody bounds a request's body. IMDS requests carry none
	// (the token PUT included); devkms ignores up to 1 KiB, in case a
	// client library sends a stray one, and answers 400 past it.
	imdsMaxRequestBody = 1 << 10
)

// Limits on the credentials devkms remembers.
const (
	// maxIMDSCredentialSets is how many issued credential sets devkms
	// remembers, so that a request signed with an expired one is answered
	// ExpiredTokenException rather than UnrecognizedClientException. At
	// most two sets are valid at a time; 64 keep a day's worth of
	// rotations at the smallest interesting lifetime (one hour: a set
	// every 55 minutes) and bound the memory whatever the clock does.
	maxIMDSCredentialSets = 64
)

var (
	// iamRoleNamePattern: "Length Constraints: Minimum length of 1.
	// Maximum length of 64. Pattern: [\w+=,.@-]+" (IAM API Reference,
	// CreateRole, RoleName).
	iamRoleNamePattern = regexp.MustCompile(`^[\w+=,.@-]{1,64}$`)
	// instanceIDPattern: EC2 instance IDs are "i-" and 8 (older) or 17
	// hexadecimal digits (EC2 User Guide, "Resource IDs").
	instanceIDPattern = regexp.MustCompile(`^i-([0-9a-f]{8}|[0-9a-f]{17})$`)
)

// validateIMDS checks the --imds-* settings; it is called when IMDS is on.
func (c *Config) validateIMDS() error {
	if !iamRoleNamePattern.MatchString(c.IMDSRole) {
		return fmt.Errorf("--imds-role %q is not an IAM role name: 1 to 64 letters, digits and +=,.@_-", shorten(c.IMDSRole))
	}
	if !instanceIDPattern.MatchString(c.IMDSInstanceID) {
		return fmt.Errorf("--imds-instance-id %q is not an EC2 instance ID such as %s (i- and 8 or 17 lowercase hexadecimal digits)", shorten(c.IMDSInstanceID), DefaultIMDSInstanceID)
	}
	if c.IMDSCredentialLifetime < MinIMDSCredentialLifetime || c.IMDSCredentialLifetime > MaxIMDSCredentialLifetime {
		return fmt.Errorf("--imds-credential-lifetime %s is outside %s to %s (shorter lifetimes leave clients no time to pick up the next set; IAM roles allow at most 12h)",
			c.IMDSCredentialLifetime, MinIMDSCredentialLifetime, MaxIMDSCredentialLifetime)
	}
	return nil
}

// credentialSet is one set of temporary role credentials.
type credentialSet struct {
	cred    Credential
	issued  time.Time
	expires time.Time
}

// roleCredentials issues the instance role's temporary credentials and
// remembers the ones it issued. A set lives lifetime; the next set is
// issued once the current one is within lead of its expiry, when IMDS is
// next asked. Safe for concurrent use.
type roleCredentials struct {
	principal string
	account   uint64
	lifetime  time.Duration
	lead      time.Duration
	now       func() time.Time
	log       *slog.Logger

	mu   sync.Mutex
	sets []*credentialSet // oldest first, at most maxIMDSCredentialSets
	byID map[string]*credentialSet
}

func newRoleCredentials(principal, accountID string, lifetime time.Duration, now func() time.Time, log *slog.Logger) *roleCredentials {
	account, _ := strconv.ParseUint(accountID, 10, 64) // Validate checked: 12 digits
	return &roleCredentials{
		principal: principal,
		account:   account,
		lifetime:  lifetime,
		lead:      rotationLead(lifetime),
		now:       now,
		log:       log,
		byID:      map[string]*credentialSet{},
	}
}

// current returns the set IMDS serves now, issuing the next one when the
// latest is due for rotation (or has expired, or there is none yet).
func (r *roleCredentials) current() *credentialSet {
	// Seconds, as IMDS writes the times: the Expiration a client reads is
	// exactly when devkms stops accepting the set.
	now := r.now().UTC().Truncate(time.Second)
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.sets); n > 0 {
		latest := r.sets[n-1]
		if now.Before(latest.expires.Add(-r.lead)) {
			return latest
		}
	}
	set := &credentialSet{
		cred: Credential{
			AccessKeyID:     newTemporaryAccessKeyID(r.account),
			SecretAccessKey: randomBase64(30), // 40 characters, as AWS's secrets
			SessionToken:    randomBase64(96),
			Principal:       r.principal,
		},
		issued:  now,
		expires: now.Add(r.lifetime),
	}
	if len(r.sets) == maxIMDSCredentialSets {
		delete(r.byID, r.sets[0].cred.AccessKeyID)
		r.sets = append(r.sets[:0], r.sets[1:]...)
	}
	r.sets = append(r.sets, set)
	r.byID[set.cred.AccessKeyID] = set
	r.log.Info("IMDS role credentials issued", "access_key_id", set.cred.AccessKeyID,
		"principal", r.principal, "expires", set.expires.Format(time.RFC3339), "next_set_from", set.expires.Add(-r.lead).Format(time.RFC3339))
	return set
}

// lookup returns an issued set's credential and expiry by access key ID.
func (r *roleCredentials) lookup(accessKeyID string) (Credential, time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	set, ok := r.byID[accessKeyID]
	if !ok {
		return Credential{}, time.Time{}, false
	}
	return set.cred, set.expires, true
}

// newTemporaryAccessKeyID returns a random temporary access key ID ("ASIA",
// the prefix of temporary credentials, and 16 base32 characters) that
// carries account the way AWS's newer key IDs do, so that tools which read
// the account from a key ID (sts get-access-key-info does it on AWS) find
// devkms's: the 80 bits after the prefix start with a 1 bit, then the
// account ID in 40 bits, then random bits (WithSecure Labs, "A bitwise
// analysis of AWS access key identifiers": bit 20 marks the new
// generation, bits 21-60 are the account; Tal Be'ery, "A short note on AWS
// KEY ID", decodes ASIAY34FZKBOKMUTVV7A to 609629065308 this way).
func newTemporaryAccessKeyID(account uint64) string {
	var b [10]byte
	rand.Read(b[:])
	hi := uint64(1)<<47 | (account&(1<<40-1))<<7 | uint64(b[5]&0x7f)
	var h [8]byte
	binary.BigEndian.PutUint64(h[:], hi)
	copy(b[:6], h[2:])
	return "ASIA" + base32.StdEncoding.EncodeToString(b[:])
}

// accountFromAccessKeyID decodes the account from a new-generation access
// key ID (the inverse of newTemporaryAccessKeyID), or false.
func accountFromAccessKeyID(id string) (uint64, bool) {
	if len(id) != 20 {
		return 0, false
	}
	b, err := base32.StdEncoding.DecodeString(id[4:])
	if err != nil || len(b) != 10 || b[0]&0x80 == 0 {
		return 0, false
	}
	var h [8]byte
	copy(h[2:], b[:6])
	return binary.BigEndian.Uint64(h[:]) >> 7 & (1<<40 - 1), true
}

func randomBase64(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// imdsService answers the IMDS API. Safe for concurrent use.
type imdsService struct {
	region     string
	accountID  string
	role       string
	instanceID string
	launched   time.Time
	now        func() time.Time
	log        *slog.Logger
	creds      *roleCredentials
	tokenKey   []byte // HMAC key of this run's session tokens
}

var _ http.Handler = (*imdsService)(nil)

func newIMDSService(cfg Config, now func() time.Time, log *slog.Logger) *imdsService {
	principal := fmt.Sprintf("arn:%s:sts::%s:assumed-role/%s/%s", partition(cfg.Region), cfg.AccountID, cfg.IMDSRole, cfg.IMDSInstanceID)
	key := make([]byte, 32)
	rand.Read(key)
	return &imdsService{
		region:     cfg.Region,
		accountID:  cfg.AccountID,
		role:       cfg.IMDSRole,
		instanceID: cfg.IMDSInstanceID,
		launched:   now().UTC().Truncate(time.Second),
		now:        now,
		log:        log,
		creds:      newRoleCredentials(principal, cfg.AccountID, cfg.IMDSCredentialLifetime, now, log),
		tokenKey:   key,
	}
}

// Session tokens are stateless: 8 bytes of expiry (Unix nanoseconds), 8
// random bytes and an HMAC-SHA256 of both under a key of this devkms run,
// in base64. devkms keeps no table of tokens, so no number of PUTs can
// grow its memory, and a token from another run (or instance) is refused.
const (
	imdsTokenRaw = 8 + 8 + sha256.Size
	imdsTokenLen = (imdsTokenRaw + 2) / 3 * 4
)

func (m *imdsService) newToken(expires time.Time) string {
	b := make([]byte, 16, imdsTokenRaw)
	binary.BigEndian.PutUint64(b, uint64(expires.UnixNano()))
	rand.Read(b[8:16])
	mac := hmac.New(sha256.New, m.tokenKey)
	mac.Write(b)
	return base64.StdEncoding.EncodeToString(mac.Sum(b))
}

// checkToken returns why a session token is refused, or "".
func (m *imdsService) checkToken(tok string, now time.Time) string {
	if tok == "" {
		return "no " + imdsTokenHeader + " header: an IMDSv1 request, refused because this IMDS requires IMDSv2 (as an instance with HttpTokens=required); get a token with PUT " + imdsTokenPath
	}
	if len(tok) != imdsTokenLen {
		return "the token is not one this IMDS issued (wrong length)"
	}
	b, err := base64.StdEncoding.DecodeString(tok)
	if err != nil || len(b) != imdsTokenRaw {
		return "the token is not one this IMDS issued (malformed)"
	}
	mac := hmac.New(sha256.New, m.tokenKey)
	mac.Write(b[:16])
	if subtle.ConstantTimeCompare(mac.Sum(nil), b[16:]) != 1 {
		return "the token is not one this IMDS issued (from another devkms run?)"
	}
	expires := time.Unix(0, int64(binary.BigEndian.Uint64(b)))
	if !now.Before(expires) {
		return "the token expired at " + expires.UTC().Format(time.RFC3339) + "; get a new one with PUT " + imdsTokenPath
	}
	return ""
}

// ServeHTTP answers IMDSv2 requests.
func (m *imdsService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	status, detail := m.serve(w, r)
	attrs := []slog.Attr{slog.String("method", r.Method), slog.String("path", shorten(r.URL.Path)), slog.Int("status", status)}
	switch {
	case detail == "":
	case status == http.StatusOK:
		attrs = append(attrs, slog.String("served", detail))
	default:
		attrs = append(attrs, slog.String("reason", detail))
	}
	m.log.LogAttrs(r.Context(), slog.LevelInfo, "imds request", attrs...)
}

// serve answers r and returns the status and, for the log, why it refused
// (IMDS's error pages say only the status) or which credentials it served.
func (m *imdsService) serve(w http.ResponseWriter, r *http.Request) (int, string) {
	body, err := io.ReadAll(io.LimitReader(r.Body, imdsMaxRequestBody+1))
	if err != nil {
		return imdsError(w, http.StatusBadRequest), "failed to read the request body: " + err.Error()
	}
	if len(body) > imdsMaxRequestBody {
		return imdsError(w, http.StatusBadRequest), fmt.Sprintf("a request body larger than %d bytes (IMDS requests carry none)", imdsMaxRequestBody)
	}
	if r.URL.Path == imdsTokenPath {
		if r.Method != http.MethodPut {
			w.Header().Set("Allow", http.MethodPut)
			return imdsError(w, http.StatusMethodNotAllowed), "tokens are issued to PUT only"
		}
		return m.serveToken(w, r)
	}
	if r.Method == http.MethodPut {
		if strings.HasSuffix(r.URL.Path, "/api/token") {
			// "Issuing PUT requests to any version-specific path, for
			// example /2021-03-23/api/token, will result in the metadata
			// service returning 403 Forbidden errors." (EC2 User Guide,
			// "Retrieve instance metadata", Considerations)
			return imdsError(w, http.StatusForbidden), "tokens come from PUT " + imdsTokenPath + " only, not from a version-specific path"
		}
		w.Header().Set("Allow", "GET, HEAD")
		return imdsError(w, http.StatusMethodNotAllowed), "metadata is read with GET or HEAD"
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		// "HTTP GET and HEAD methods are allowed in IMDSv2 instance
		// metadata requests." (EC2 User Guide, "Use IMDSv2")
		w.Header().Set("Allow", "GET, HEAD")
		return imdsError(w, http.StatusMethodNotAllowed), "metadata is read with GET or HEAD"
	}
	// "When token usage is set to required, requests without a valid token
	// or with an expired token receive a 401 - Unauthorized HTTP error
	// code." (EC2 User Guide, "Use IMDSv2")
	if why := m.checkToken(r.Header.Get(imdsTokenHeader), m.now()); why != "" {
		return imdsError(w, http.StatusUnauthorized), why
	}
	value, reason := m.metadata(r.URL.Path)
	if value == nil {
		return imdsError(w, http.StatusNotFound), "no such metadata item"
	}
	// "All instance metadata is returned as text (HTTP content type
	// text/plain)." (EC2 User Guide, "Retrieve instance metadata")
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Content-Length", strconv.Itoa(len(value)))
	w.WriteHeader(http.StatusOK)
	w.Write(value)
	return http.StatusOK, reason
}

func (m *imdsService) serveToken(w http.ResponseWriter, r *http.Request) (int, string) {
	// "PUT requests are rejected if they contain an X-Forwarded-For
	// header." (EC2 User Guide, "Use IMDSv2"): a token must not be handed
	// to a request a proxy relayed.
	if _, ok := r.Header["X-Forwarded-For"]; ok {
		return imdsError(w, http.StatusForbidden), "a token PUT with an X-Forwarded-For header (a relayed request) is refused, as EC2 refuses it"
	}
	vs := r.Header.Values(imdsTokenTTLHeader)
	if len(vs) != 1 {
		return imdsError(w, http.StatusBadRequest), fmt.Sprintf("the token PUT needs exactly one %s header (seconds, %d to %d)", imdsTokenTTLHeader, imdsMinTokenTTL, imdsMaxTokenTTL)
	}
	ttl, err := strconv.Atoi(strings.TrimSpace(vs[0]))
	if err != nil || ttl < imdsMinTokenTTL || ttl > imdsMaxTokenTTL {
		return imdsError(w, http.StatusBadRequest), fmt.Sprintf("%s %q is not a whole number of seconds from %d to %d", imdsTokenTTLHeader, shorten(vs[0]), imdsMinTokenTTL, imdsMaxTokenTTL)
	}
	tok := m.newToken(m.now().Add(time.Duration(ttl) * time.Second))
	// EC2 answers with the token as text and its TTL in the same header;
	// the SDKs read the TTL from it (aws-sdk-go-v2 feature/ec2/imds,
	// GetToken).
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set(imdsTokenTTLHeader, strconv.Itoa(ttl))
	w.Header().Set("Content-Length", strconv.Itoa(len(tok)))
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, tok)
	return http.StatusOK, ""
}

// Paths of the metadata items devkms serves: the ones kmsproxyd and the AWS
// SDKs read (role credentials, region) and the instance's identity.
const (
	imdsMetaData    = "/latest/meta-data/"
	imdsCredsDir    = imdsMetaData + "iam/security-credentials/"
	imdsDynamicData = "/latest/dynamic/"
	imdsIdentityDoc = imdsDynamicData + "instance-identity/document"
)

// metadata returns the value at path, or nil; for a credential document it
// also says which set (for the log).
func (m *imdsService) metadata(path string) ([]byte, string) {
	// A general item (a directory) lists what is under it, one per line,
	// sub-directories with a trailing slash; EC2 answers with or without
	// the slash. Only what devkms serves is listed.
	dirs := map[string]string{
		"/latest":               "dynamic/\nmeta-data/",
		"/latest/meta-data":     "iam/\ninstance-id\nplacement/",
		"/latest/meta-data/iam": "security-credentials/",
		"/latest/meta-data/iam/security-credentials": m.role,
		"/latest/meta-data/placement":                "region",
		"/latest/dynamic":                            "instance-identity/",
		"/latest/dynamic/instance-identity":          "document",
	}
	if v, ok := dirs[strings.TrimSuffix(path, "/")]; ok {
		return []byte(v), ""
	}
	switch path {
	case imdsMetaData + "instance-id":
		return []byte(m.instanceID), ""
	case imdsMetaData + "placement/region":
		return []byte(m.region), ""
	case imdsCredsDir + m.role:
		set := m.creds.current()
		return credentialDocument(set), "role credentials " + set.cred.AccessKeyID + ", expire " + set.expires.Format(time.RFC3339)
	case imdsIdentityDoc:
		return m.identityDocument(), ""
	}
	return nil, ""
}

// imdsTime is how IMDS writes times: "2017-05-17T15:09:54Z".
const imdsTime = "2006-01-02T15:04:05Z"

// credentialDocument is a role's credentials as IMDS serves them, members
// in EC2's order and layout (EC2 User Guide, "Retrieve security credentials
// from instance metadata", example output):
//
//	{
//	  "Code" : "Success",
//	  "LastUpdated" : "2012-04-26T16:39:16Z",
//	  "Type" : "AWS-HMAC",
//	  "AccessKeyId" : "ASIAIOSFODNN7EXAMPLE",
//	  "SecretAccessKey" : "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
//	  "Token" : "token",
//	  "Expiration" : "2017-05-17T15:09:54Z"
//	}
func credentialDocument(set *credentialSet) []byte {
	return ec2JSON("  ", []member{
		{"Code", "Success"},
		{"LastUpdated", set.issued.UTC().Format(imdsTime)},
		{"Type", "AWS-HMAC"},
		{"AccessKeyId", set.cred.AccessKeyID},
		{"SecretAccessKey", set.cred.SecretAccessKey},
		{"Token", set.cred.SessionToken},
		{"Expiration", set.expires.UTC().Format(imdsTime)},
	})
}

// identityDocument is the instance identity document, members in the order
// and layout of the EC2 User Guide's example ("Instance identity
// documents"). The AMI ID is the guide's example one, the instance type one
// that supports Nitro Enclaves, the launch time devkms's start.
func (m *imdsService) identityDocument() []byte {
	arch := runtime.GOARCH
	switch arch {
	case "amd64":
		arch = "x86_64"
	case "386":
		arch = "i386"
	}
	return ec2JSON("    ", []member{
		{"accountId", m.accountID},
		{"architecture", arch},
		{"availabilityZone", m.region + "a"},
		{"billingProducts", nil},
		{"devpayProductCodes", nil},
		{"marketplaceProductCodes", nil},
		{"imageId", "ami-0abcdef1234567890"},
		{"instanceId", m.instanceID},
		{"instanceType", "m5.xlarge"},
		{"kernelId", nil},
		{"pendingTime", m.launched.Format(imdsTime)},
		{"privateIp", "10.0.0.10"},
		{"ramdiskId", nil},
		{"region", m.region},
		{"version", "2017-09-30"},
	})
}

type member struct {
	name  string
	value any
}

// ec2JSON writes an object the way IMDS does: one member per line,
// indented, "name" : value.
func ec2JSON(indent string, members []member) []byte {
	var b strings.Builder
	b.WriteString("{\n")
	for i, mb := range members {
		v, _ := json.Marshal(mb.value) // strings and nil only
		fmt.Fprintf(&b, "%s%q : %s", indent, mb.name, v)
		if i < len(members)-1 {
			b.WriteString(",")
		}
		b.WriteString("\n")
	}
	b.WriteString("}")
	return []byte(b.String())
}

// imdsError writes IMDS's error page for status (EC2 answers errors with
// a small XHTML page naming the status, as AWS's ec2-metadata-mock
// reproduces) and returns status.
func imdsError(w http.ResponseWriter, status int) int {
	title := fmt.Sprintf("%d - %s", status, http.StatusText(status))
	page := `<?xml version="1.0" encoding="iso-8859-1"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
	"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title>` + title + `</title>
 </head>
 <body>
  <h1>` + title + `</h1>
 </body>
</html>
`
	w.Header().Set("Content-Type", "text/html")
	w.Header().Set("Content-Length", strconv.Itoa(len(page)))
	w.WriteHeader(status)
	io.WriteString(w, page)
	return status
}
