package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/enclavekit/kmsproxy/internal/suggest"
	"github.com/enclavekit/kmsproxy/internal/yamlfile"
	"go.yaml.in/yaml/v3"
)

// MaxFileSize bounds the policy file kmsproxyd reads at start. A policy is a
// handful of lines: enclave/policy.example.yaml, comments included, is about
// 4 KiB, and one that spells out every operation and control endpoint on both
// listeners with a hundred key patterns stays under 16 KiB. 64 KiB, the bound
// kmsproxyd also sets for a request body, leaves room for comments and keeps
// what the YAML parser is handed small.
const MaxFileSize = 64 << 10

// ParseError says why a policy file was refused and where. Error gives
// "FILE:LINE:COLUMN: PATH: REASON", for example
//
//	policy.yaml:7:5: listeners.parent.operations[2]: unknown operation "Decrpyt" (did you mean "Decrypt"?)
//
// File is the name given to Parse or Load ("policy" when that is empty);
// Line and Column are 1-based, Column 0 for YAML syntax errors (whose line
// is the one the YAML parser reports) and Line 0 for the file as a whole
// (size, emptiness); Path locates the offending node, e.g.
// "listeners.parent.keys[0]". It is the error every YAML configuration file
// of kmsproxy's gives (internal/yamlfile).
type ParseError = yamlfile.Error

// Load reads and parses the policy file at path. A file larger than
// MaxFileSize is refused without reading the rest.
func Load(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("failed to open policy file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read policy file %s: %w", path, err)
	}
	return Parse(data, path)
}

// Parse parses and checks a policy file; filename is used in errors and
// reported by Source. Every problem is a *ParseError naming the first
// offending node; see the package documentation for the format and the
// meaning of omitted fields.
func Parse(data []byte, filename string) (*Policy, error) {
	name := filename
	if name == "" {
		name = "policy"
	}
	p := &parser{filename: name}
	if len(data) > MaxFileSize {
		return nil, p.fileError(fmt.Sprintf("file is larger than the %d-byte limit", MaxFileSize))
	}
	root, err := p.document(data)
	if err != nil {
		return nil, err
	}
	pin, listeners, err := p.top(root)
	if err != nil {
		return nil, err
	}
	for _, name := range Listeners {
		if _, ok := listeners[name]; !ok {
			listeners[name] = denyAll(name)
		}
		listeners[name].pin = pin
	}
	sum := sha256.Sum256(data)
	return &Policy{listeners: listeners, source: filename, sha256: hex.EncodeToString(sum[:]), kms: pin}, nil
}

// topFields are the fields the top level of a policy may hold.
var topFields = []string{"kms", "listeners"}

// kmsFields are the fields the kms: section may hold.
var kmsFields = []string{"accounts", "regions", "keys"}

// listenerFields are the fields a listener's mapping may hold.
var listenerFields = []string{"operations", "keys", "encryption_context", "without_encryption_context", "plaintext",
	"credentials_push", "control", "max_inflight", "max_connections", "metrics_all_listeners", "decrypt_cache"}

// decryptCacheFields are the fields of a listener's decrypt_cache, all
// required.
var decryptCacheFields = []string{"max_age", "max_uses", "max_entries"}

type parser struct {
	filename string
}

func (p *parser) fileError(reason string) *ParseError {
	return &ParseError{File: p.filename, Reason: reason}
}

func (p *parser) errorAt(n *yaml.Node, path, format string, args ...any) *ParseError {
	return &ParseError{File: p.filename, Line: n.Line, Column: n.Column, Path: path, Reason: fmt.Sprintf(format, args...)}
}

// yamlLine finds the line number in a go.yaml.in/yaml/v3 syntax error,
// which reads "yaml: line N: problem", or "yaml: problem" when the problem
// is on the first line (the parser prints no line when its 0-based line
// mark is 0).
var yamlLine = regexp.MustCompile(`^yaml: line ([0-9]+): (.*)$`)

// yamlUnknownAnchor is the error go.yaml.in/yaml/v3 gives, without a line,
// for an alias whose anchor is not defined before it.
var yamlUnknownAnchor = regexp.MustCompile(`^yaml: unknown anchor '(.*)' referenced$`)

// syntaxError turns a YAML parser error into a *ParseError.
func (p *parser) syntaxError(data []byte, err error) *ParseError {
	msg := err.Error()
	e := &ParseError{File: p.filename}
	switch m := yamlLine.FindStringSubmatch(msg); {
	case m != nil:
		e.Line, _ = strconv.Atoi(m[1])
		msg = m[2]
	case yamlUnknownAnchor.MatchString(msg):
		// Aliases are refused anyway; point at the first "*name".
		name := yamlUnknownAnchor.FindStringSubmatch(msg)[1]
		e.Line, e.Column = locate(data, "*"+name)
		e.Reason = fmt.Sprintf("YAML aliases (*%s) are not supported in a policy: write the value out", name)
		return e
	case strings.HasPrefix(msg, "yaml: attempted to go past the end of stream"):
		// No position: the parser lost track of it.
	default:
		// The parser omits the line only when its 0-based mark is 0.
		e.Line = 1
	}
	e.Reason = "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")
	if strings.Contains(msg, "did not find expected alphabetic or numeric character") {
		e.Reason += ` (a bare * starts a YAML alias: quote it, "*")`
	}
	return e
}

// locate returns the 1-based line and column (in characters) of the first
// occurrence of s in data, or 0, 0.
func locate(data []byte, s string) (line, column int) {
	i := bytes.Index(data, []byte(s))
	if i < 0 {
		return 0, 0
	}
	before := data[:i]
	line = 1 + bytes.Count(before, []byte("\n"))
	lineStart := bytes.LastIndexByte(before, '\n') + 1
	return line, 1 + utf8.RuneCount(before[lineStart:])
}

// document decodes data into its one YAML document and returns the root
// node.
func (p *parser) document(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, p.fileError("file is empty: a policy is a mapping with a listeners key")
		}
		return nil, p.syntaxError(data, err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		at := &extra
		if len(extra.Content) > 0 {
			at = extra.Content[0]
		}
		return nil, p.errorAt(at, "", "a policy file holds one YAML document, and a second one starts here")
	case !errors.Is(err, io.EOF):
		return nil, p.syntaxError(data, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, p.fileError("file holds no YAML document")
	}
	return doc.Content[0], nil
}

// top checks the root mapping and returns its kms: section (empty when
// absent) and the rules of each listener it configures.
func (p *parser) top(root *yaml.Node) (*Pin, map[string]*Rules, error) {
	pairs, err := p.mapping(root, "", "a policy must be a mapping with a listeners key")
	if err != nil {
		return nil, nil, err
	}
	var listenersNode *yaml.Node
	pin := &Pin{}
	for _, kv := range pairs {
		switch kv.name {
		case "listeners":
			listenersNode = kv.value
		case "kms":
			if pin, err = p.kms(kv.value, "kms"); err != nil {
				return nil, nil, err
			}
		default:
			return nil, nil, p.errorAt(kv.key, "", "unknown field %s%s; the top level holds only kms and listeners", echo(kv.name), suggest.DidYouMean(kv.name, topFields))
		}
	}
	if listenersNode == nil {
		return nil, nil, p.errorAt(root, "", "missing listeners: a policy says what each listener (parent, local) may do")
	}
	pairs, err = p.mapping(listenersNode, "listeners", "")
	if err != nil {
		return nil, nil, err
	}
	out := make(map[string]*Rules, len(Listeners))
	for _, kv := range pairs {
		if !slices.Contains(Listeners, kv.name) {
			return nil, nil, p.errorAt(kv.key, "listeners", "unknown listener %s%s; the listeners are %s", echo(kv.name), suggest.DidYouMean(kv.name, Listeners), strings.Join(Listeners, " and "))
		}
		r, err := p.listener(kv.value, "listeners."+kv.name, kv.name)
		if err != nil {
			return nil, nil, err
		}
		out[kv.name] = r
	}
	return pin, out, nil
}

// position renders where n is, as "FILE:LINE:COLUMN".
func (p *parser) position(n *yaml.Node) string {
	e := &ParseError{File: p.filename, Line: n.Line, Column: n.Column}
	return strings.TrimSuffix(e.Error(), ": ")
}

// kms parses the kms: section.
func (p *parser) kms(n *yaml.Node, path string) (*Pin, error) {
	pairs, err := p.mapping(n, path, "must be a mapping with accounts (and optionally regions and keys)")
	if err != nil {
		return nil, err
	}
	if len(pairs) == 0 {
		return nil, p.errorAt(n, path, "empty: list the accounts whose keys kmsproxyd may use under accounts, or omit kms")
	}
	pin := &Pin{}
	var keyNodes []*yaml.Node
	for _, kv := range pairs {
		fpath := path + "." + kv.name
		switch kv.name {
		case "accounts":
			pin.Accounts, err = p.pinList(kv.value, fpath, "account", accountPattern,
				`an AWS account ID is 12 digits, quoted: "111122223333"`)
			pin.accountsAt = p.position(kv.value)
		case "regions":
			pin.Regions, err = p.pinList(kv.value, fpath, "region", regionPattern,
				"a region name looks like eu-west-1 or us-gov-west-1")
			pin.regionsAt = p.position(kv.value)
		case "keys":
			pin.Keys, keyNodes, err = p.pinKeys(kv.value, fpath)
			pin.keysAt = p.position(kv.value)
		default:
			err = p.errorAt(kv.key, path, "unknown field %s%s; kms holds accounts, regions and keys", echo(kv.name), suggest.DidYouMean(kv.name, kmsFields))
		}
		if err != nil {
			return nil, err
		}
	}
	// A key pattern naming an account or region the pin leaves out could
	// never match: say so rather than refuse every answer at run time.
	for i, k := range pin.Keys {
		f := strings.SplitN(k, ":", 6)
		ipath := fmt.Sprintf("%s.keys[%d]", path, i)
		if len(pin.Accounts) > 0 && !hasWildcard(f[4]) && !slices.Contains(pin.Accounts, f[4]) {
			return nil, p.errorAt(keyNodes[i], ipath, "key ARN pattern %s names account %s, which kms.accounts does not list, so it could never match: "+
				"add the account to kms.accounts or correct the key ARN", echo(k), f[4])
		}
		if len(pin.Regions) > 0 && !hasWildcard(f[3]) && !slices.Contains(pin.Regions, f[3]) {
			return nil, p.errorAt(keyNodes[i], ipath, "key ARN pattern %s names region %s, which kms.regions does not list, so it could never match: "+
				"add the region to kms.regions or correct the key ARN", echo(k), f[3])
		}
	}
	return pin, nil
}

// keyARNForm is how a kms.keys entry is written.
const keyARNForm = `a key ARN, arn:PARTITION:kms:REGION:ACCOUNT:key/ID ("arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"), in which * and ? are wildcards`

// pinKeys parses kms.keys: a non-empty list of distinct key ARN patterns
// (globs as a listener's keys take), each with all six ARN fields, the
// service kms and a key/ resource that names keys: an alias, which can be
// moved to another key, cannot pin one, and a pattern for every key id
// pins no key. It returns the patterns and their nodes.
func (p *parser) pinKeys(n *yaml.Node, path string) ([]string, []*yaml.Node, error) {
	items, err := p.sequence(n, path)
	if err != nil {
		return nil, nil, err
	}
	if len(items) == 0 {
		return nil, nil, p.errorAt(n, path, "empty list: list the key ARNs kmsproxyd may use, or omit the field")
	}
	out := make([]string, 0, len(items))
	seen := make(map[string]int, len(items))
	for i, item := range items {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		s, err := p.str(item, ipath)
		if err != nil {
			return nil, nil, err
		}
		if reason := checkKeyPattern(s); reason != "" {
			return nil, nil, p.errorAt(item, ipath, "bad key ARN pattern %s: %s", echo(s), reason)
		}
		if reason := checkPinnedKey(s); reason != "" {
			return nil, nil, p.errorAt(item, ipath, "%s %s", echo(s), reason)
		}
		if line, dup := seen[s]; dup {
			return nil, nil, p.errorAt(item, ipath, "key ARN pattern %s is listed twice (first at line %d)", echo(s), line)
		}
		seen[s] = item.Line
		out = append(out, s)
	}
	return out, items, nil
}

// keyIDSamples are key ids of the two forms KMS generates: a UUID ("Key
// identifiers (KeyId)", AWS KMS Developer Guide) and a multi-Region key's
// "mrk-" and 32 hex digits ("Multi-Region key identifiers"), with digits
// that differ from sample to sample.
var keyIDSamples = [][]string{
	{"00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"},
	{"mrk-00000000000000000000000000000000", "mrk-ffffffffffffffffffffffffffffffff", "mrk-0f1e2d3c4b5a69788796a5b4c3d2e1f0"},
}

// matchesEveryKeyID reports whether a key id pattern matches every sample
// key id of one form: then it admits any key KMS creates, and pins none.
// "key/*" does, and so do "key/?*", "key/*-*" and a pattern of question
// marks in a UUID's shape.
func matchesEveryKeyID(pattern string) bool {
	for _, ids := range keyIDSamples {
		every := true
		for _, id := range ids {
			every = every && match(pattern, id)
		}
		if every {
			return true
		}
	}
	return false
}

// checkPinnedKey says why a pattern, already a valid key pattern
// (checkKeyPattern), is no kms.keys entry, or returns "".
func checkPinnedKey(s string) string {
	if strings.HasPrefix(s, "alias/") || strings.Contains(s, ":alias/") {
		return "is an alias: an alias can be moved to another key, so it cannot pin one. " +
			"List the key ARN of the key it points to here, and the alias under a listener's keys if callers name it"
	}
	f := strings.SplitN(s, ":", 6)
	if len(f) < 6 || f[0] != "arn" {
		return "is not " + keyARNForm
	}
	if f[2] != "kms" {
		return fmt.Sprintf("names the service %q: write %s", f[2], keyARNForm)
	}
	id, ok := strings.CutPrefix(f[5], "key/")
	if !ok || strings.ContainsAny(id, ":/") {
		return "is not " + keyARNForm
	}
	if matchesEveryKeyID(id) {
		return "matches every key id and so pins no key (kms.accounts and kms.regions already pin the account and region): " +
			"list the ARN of each key kmsproxyd may use"
	}
	if !hasWildcard(f[3]) && !regionPattern.MatchString(f[3]) {
		return fmt.Sprintf("names the region %q, which is no AWS region name (eu-west-1, us-gov-west-1)", f[3])
	}
	return ""
}

// pinList parses kms.accounts or kms.regions: a non-empty list of distinct
// strings, each matching pattern.
func (p *parser) pinList(n *yaml.Node, path, what string, pattern *regexp.Regexp, form string) ([]string, error) {
	items, err := p.sequence(n, path)
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, p.errorAt(n, path, "empty list: list at least one %s, or omit the field", what)
	}
	out := make([]string, 0, len(items))
	seen := make(map[string]int, len(items))
	for i, item := range items {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		s, err := p.str(item, ipath)
		if err != nil {
			return nil, err
		}
		if hasWildcard(s) {
			return nil, p.errorAt(item, ipath, "%s %s: wildcards are not allowed here, since a pattern would pin nothing; list each %s", what, echo(s), what)
		}
		if !pattern.MatchString(s) {
			return nil, p.errorAt(item, ipath, "%s %s is malformed: %s", what, echo(s), form)
		}
		if line, dup := seen[s]; dup {
			return nil, p.errorAt(item, ipath, "%s %s is listed twice (first at line %d)", what, s, line)
		}
		seen[s] = item.Line
		out = append(out, s)
	}
	return out, nil
}

// listener parses one listener's rules, applying the file defaults for
// omitted fields.
func (p *parser) listener(n *yaml.Node, path, name string) (*Rules, error) {
	pairs, err := p.mapping(n, path, "")
	if err != nil {
		return nil, err
	}
	r := &Rules{listener: name, Operations: []string{}, Control: slices.Clone(defaultControl)}
	var opNodes []*yaml.Node
	var withoutECKey, cacheKey *yaml.Node
	plaintextSet := false
	for _, kv := range pairs {
		fpath := path + "." + kv.name
		switch kv.name {
		case "operations":
			r.Operations, opNodes, err = p.names(kv.value, fpath, "operation", allOperations)
		case "keys":
			r.Keys, err = p.keyPatterns(kv.value, fpath)
		case "encryption_context":
			r.EncryptionContext, err = p.encryptionContext(kv.value, fpath)
		case "plaintext":
			r.Plaintext, err = p.boolean(kv.value, fpath)
			plaintextSet = true
		case "credentials_push":
			r.CredentialsPush, err = p.boolean(kv.value, fpath)
		case "control":
			r.Control, _, err = p.names(kv.value, fpath, "control endpoint", ControlEndpoints)
		case "without_encryption_context":
			r.WithoutEncryptionContext, _, err = p.names(kv.value, fpath, "operation without encryption context", contextFreeOperations)
			withoutECKey = kv.key
		case "max_inflight":
			r.MaxInflight, err = p.limit(kv.value, fpath, MaxInflightLimit)
		case "max_connections":
			r.MaxConnections, err = p.limit(kv.value, fpath, MaxConnectionsLimit)
		case "metrics_all_listeners":
			r.MetricsAllListeners, err = p.boolean(kv.value, fpath)
		case "decrypt_cache":
			r.DecryptCache, err = p.decryptCache(kv.value, fpath)
			cacheKey = kv.key
		default:
			err = p.errorAt(kv.key, path, "unknown field %s%s; a listener's fields are %s", echo(kv.name), suggest.DidYouMean(kv.name, listenerFields), strings.Join(listenerFields, ", "))
		}
		if err != nil {
			return nil, err
		}
	}
	if withoutECKey != nil && len(r.EncryptionContext) == 0 {
		return nil, p.errorAt(withoutECKey, path+".without_encryption_context",
			"means nothing without encryption_context, which this listener does not set: remove it")
	}
	if len(r.EncryptionContext) > 0 {
		for i, op := range r.Operations {
			if op != Wildcard && !slices.Contains(ContextOperations, op) && !r.contextFreeAllowed(op) {
				return nil, p.errorAt(opNodes[i], fmt.Sprintf("%s.operations[%d]", path, i),
					"%s carries no encryption context but this listener requires one (encryption_context), so it would always be refused: "+
						"add it to without_encryption_context to allow it without one, or remove %s", op, op)
			}
		}
	}
	if cacheKey != nil {
		if err := p.cacheUsable(r, cacheKey, path, plaintextSet); err != nil {
			return nil, err
		}
	}
	if !r.Plaintext {
		why := "plaintext is false on this listener"
		if !plaintextSet {
			why = "this listener omits plaintext, which then is false"
		}
		for i, op := range r.Operations {
			if IsAttested(op) {
				return nil, p.errorAt(opNodes[i], fmt.Sprintf("%s.operations[%d]", path, i),
					"%s is an attested operation (its answer carries plaintext) but %s, so it would always be refused: set plaintext: true or remove %s", op, why, op)
			}
		}
	}
	return r, nil
}

// pair is one key and value of a YAML mapping.
type pair struct {
	name       string
	key, value *yaml.Node
}

// noAlias refuses YAML anchors and aliases: a policy is read by people
// auditing what an enclave image allows, and every value should be where it
// applies.
func (p *parser) noAlias(n *yaml.Node, path string) error {
	if n.Kind == yaml.AliasNode {
		return p.errorAt(n, path, "YAML aliases (*%s) are not supported in a policy: write the value out", n.Value)
	}
	if n.Anchor != "" {
		return p.errorAt(n, path, "YAML anchors (&%s) are not supported in a policy: write the value out", n.Anchor)
	}
	return nil
}

// mapping checks that n is a mapping with string keys, none repeated, and
// returns its pairs in file order. mustBe replaces the default wrong-type
// reason.
func (p *parser) mapping(n *yaml.Node, path, mustBe string) ([]pair, error) {
	if err := p.noAlias(n, path); err != nil {
		return nil, err
	}
	if n.Kind != yaml.MappingNode {
		if mustBe == "" {
			mustBe = "must be a mapping"
		}
		return nil, p.errorAt(n, path, "%s, got %s", mustBe, describe(n))
	}
	pairs := make([]pair, 0, len(n.Content)/2)
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if err := p.noAlias(k, path); err != nil {
			return nil, err
		}
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			return nil, p.errorAt(k, path, "YAML merge keys (<<) are not supported in a policy: write the fields out")
		}
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
			return nil, p.errorAt(k, path, "keys must be strings, got %s%s", describe(k), quoteHint(k))
		}
		if line, dup := seen[k.Value]; dup {
			return nil, p.errorAt(k, path, "duplicate key %s (first at line %d)", echo(k.Value), line)
		}
		seen[k.Value] = k.Line
		if err := p.noAlias(v, joinPath(path, k.Value)); err != nil {
			return nil, err
		}
		pairs = append(pairs, pair{name: k.Value, key: k, value: v})
	}
	return pairs, nil
}

// sequence checks that n is a list and returns its items.
func (p *parser) sequence(n *yaml.Node, path string) ([]*yaml.Node, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, p.errorAt(n, path, "must be a list, got %s", describe(n))
	}
	for i, item := range n.Content {
		if err := p.noAlias(item, fmt.Sprintf("%s[%d]", path, i)); err != nil {
			return nil, err
		}
	}
	return n.Content, nil
}

// str returns the value of a string scalar.
func (p *parser) str(n *yaml.Node, path string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return "", p.errorAt(n, path, "must be a string, got %s%s", describe(n), quoteHint(n))
	}
	return n.Value, nil
}

// boolean returns the value of a true/false scalar. YAML 1.1 spellings such
// as yes and on are strings in YAML 1.2 and are refused.
func (p *parser) boolean(n *yaml.Node, path string) (bool, error) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		return false, p.errorAt(n, path, "must be true or false, got %s", describe(n))
	}
	var b bool
	if err := n.Decode(&b); err != nil {
		return false, p.errorAt(n, path, "must be true or false, got %s", describe(n))
	}
	return b, nil
}

// names parses a list of names from known, or ["*"]. It returns the names
// and their nodes.
func (p *parser) names(n *yaml.Node, path, what string, known []string) ([]string, []*yaml.Node, error) {
	items, err := p.sequence(n, path)
	if err != nil {
		return nil, nil, err
	}
	out := make([]string, 0, len(items))
	seen := make(map[string]int, len(items))
	for i, item := range items {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		s, err := p.str(item, ipath)
		if err != nil {
			return nil, nil, err
		}
		switch {
		case s == Wildcard:
			if len(items) > 1 {
				return nil, nil, p.errorAt(item, ipath, `"*" allows every %s and cannot be combined with names: list either "*" or names`, what)
			}
		case !slices.Contains(known, s):
			hint := suggest.DidYouMean(s, known)
			if hasWildcard(s) {
				hint = fmt.Sprintf(`; names are exact, without wildcards: list them, or "*" alone for every %s`, what)
			} else if hint == "" {
				hint = fmt.Sprintf(`; known names are %s, or "*" for all`, strings.Join(known, ", "))
			}
			return nil, nil, p.errorAt(item, ipath, "unknown %s %s%s", what, echo(s), hint)
		}
		if line, dup := seen[s]; dup {
			return nil, nil, p.errorAt(item, ipath, "%s %s is listed twice (first at line %d)", what, s, line)
		}
		seen[s] = item.Line
		out = append(out, s)
	}
	return out, items, nil
}

// limit parses a positive integer of at most max.
func (p *parser) limit(n *yaml.Node, path string, max int) (int, error) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		return 0, p.errorAt(n, path, "must be a whole number from 1 to %d, got %s", max, describe(n))
	}
	v, err := strconv.Atoi(n.Value)
	if err != nil || v < 1 || v > max {
		return 0, p.errorAt(n, path, "must be a whole number from 1 to %d, got %s", max, describe(n))
	}
	return v, nil
}

// decryptCache parses a listener's decrypt_cache: a mapping with all of
// max_age, max_uses and max_entries.
func (p *parser) decryptCache(n *yaml.Node, path string) (*DecryptCache, error) {
	const form = "must be a mapping such as {max_age: 5m, max_uses: 1000, max_entries: 10000}"
	pairs, err := p.mapping(n, path, form)
	if err != nil {
		return nil, err
	}
	dc := &DecryptCache{}
	seen := map[string]bool{}
	for _, kv := range pairs {
		fpath := path + "." + kv.name
		switch kv.name {
		case "max_age":
			dc.MaxAge, err = p.duration(kv.value, fpath, MinDecryptCacheAge, MaxDecryptCacheAge)
		case "max_uses":
			dc.MaxUses, err = p.limit(kv.value, fpath, MaxDecryptCacheUses)
		case "max_entries":
			dc.MaxEntries, err = p.limit(kv.value, fpath, MaxDecryptCacheEntries)
		default:
			err = p.errorAt(kv.key, path, "unknown field %s%s; decrypt_cache holds max_age, max_uses and max_entries",
				echo(kv.name), suggest.DidYouMean(kv.name, decryptCacheFields))
		}
		if err != nil {
			return nil, err
		}
		seen[kv.name] = true
	}
	var missing []string
	for _, f := range decryptCacheFields {
		if !seen[f] {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return nil, p.errorAt(n, path, "missing %s: a decrypt cache needs all of max_age, max_uses and max_entries, "+
			"so that every bound on it is written in the policy (for example {max_age: 5m, max_uses: 1000, max_entries: 10000})",
			joinAnd(missing))
	}
	return dc, nil
}

// joinAnd joins words as a sentence lists them: "a", "a and b", "a, b
// and c".
func joinAnd(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " and " + words[len(words)-1]
}

// cacheUsable refuses a decrypt_cache on a listener that could never use
// it: one that may not call Decrypt or may not receive plaintext.
func (p *parser) cacheUsable(r *Rules, key *yaml.Node, path string, plaintextSet bool) error {
	cpath := path + ".decrypt_cache"
	if !r.Plaintext {
		why := "plaintext is false on this listener"
		if !plaintextSet {
			why = "this listener omits plaintext, which then is false"
		}
		return p.errorAt(key, cpath, "means nothing: Decrypt answers carry plaintext and %s; set plaintext: true or remove decrypt_cache", why)
	}
	if !slices.Contains(r.Operations, Wildcard) && !slices.Contains(r.Operations, "Decrypt") {
		return p.errorAt(key, cpath, "means nothing: this listener may not call Decrypt (operations); add Decrypt to operations or remove decrypt_cache")
	}
	return nil
}

// duration parses a Go duration string ("5m", "90s", "1h") from min to max.
func (p *parser) duration(n *yaml.Node, path string, min, max time.Duration) (time.Duration, error) {
	form := fmt.Sprintf("must be a duration from %s to %s with its unit, such as 30s, 5m or 1h", fmtDuration(min), fmtDuration(max))
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return 0, p.errorAt(n, path, "%s, got %s", form, describe(n))
	}
	d, err := time.ParseDuration(n.Value)
	if err != nil || d < min || d > max {
		return 0, p.errorAt(n, path, "%s, got %s", form, describe(n))
	}
	return d, nil
}

// fmtDuration writes whole hours, minutes or seconds without the zero
// units time.Duration.String adds ("1h", not "1h0m0s").
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// keyPatterns parses the keys list.
func (p *parser) keyPatterns(n *yaml.Node, path string) ([]string, error) {
	items, err := p.sequence(n, path)
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, p.errorAt(n, path, "empty list: omit keys to allow any key, or list the key patterns to allow")
	}
	out := make([]string, 0, len(items))
	seen := make(map[string]int, len(items))
	for i, item := range items {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		s, err := p.str(item, ipath)
		if err != nil {
			return nil, err
		}
		if reason := checkKeyPattern(s); reason != "" {
			return nil, p.errorAt(item, ipath, "bad key pattern %s: %s", echo(s), reason)
		}
		if line, dup := seen[s]; dup {
			return nil, p.errorAt(item, ipath, "key pattern %s is listed twice (first at line %d)", echo(s), line)
		}
		seen[s] = item.Line
		out = append(out, s)
	}
	return out, nil
}

// encryptionContext parses the encryption_context mapping.
func (p *parser) encryptionContext(n *yaml.Node, path string) (map[string]string, error) {
	pairs, err := p.mapping(n, path, "must be a mapping of encryption context keys to value patterns")
	if err != nil {
		return nil, err
	}
	if len(pairs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(pairs))
	for _, kv := range pairs {
		if kv.name == "" {
			return nil, p.errorAt(kv.key, path, "empty encryption context key")
		}
		vpath := joinPath(path, kv.name)
		v, err := p.str(kv.value, vpath)
		if err != nil {
			return nil, err
		}
		if reason := checkValuePattern(v); reason != "" {
			return nil, p.errorAt(kv.value, vpath, "bad value pattern %s: %s", echo(v), reason)
		}
		out[kv.name] = v
	}
	return out, nil
}

// describe names a node's kind and value for an error message.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		switch tag := n.ShortTag(); tag {
		case "!!null":
			return "null"
		case "!!str":
			return "the string " + echo(n.Value)
		case "!!int", "!!float", "!!bool", "!!timestamp", "!!binary":
			if n.Style&yaml.TaggedStyle == 0 && len(n.Value) <= 64 {
				return strings.TrimPrefix(tag, "!!") + " " + n.Value
			}
			return strings.TrimPrefix(tag, "!!") + " " + echo(n.Value)
		default:
			return "a value tagged " + echo(tag)
		}
	}
	return "an empty node"
}

// quoteHint suggests quoting a scalar YAML read as another type.
func quoteHint(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode && n.Style&yaml.TaggedStyle == 0 && n.ShortTag() != "!!str" && n.ShortTag() != "!!null" {
		return fmt.Sprintf(" (quote it for the string: %s)", strconv.Quote(n.Value))
	}
	return ""
}
