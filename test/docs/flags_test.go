package docs

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/enclavekit/kmsproxy/test/internal/harness"
)

// flagInfo is one flag as -h prints it.
type flagInfo struct {
	Name    string
	Default string // "" when -h shows none
	Usage   string // the usage text, on one line, without "(default ...)"
	// Placeholder is the value's name after the flag ("DURATION",
	// "FILE"), taken by flag.UnquoteUsage from the first backquoted word
	// of the usage.
	Placeholder string
}

// update rewrites docs/configuration.md's meaning column from -h.
var update = flag.Bool("update", false, "rewrite the meaning column of docs/configuration.md's flag tables from the binaries' -h")

// scope is a binary, or "kmsproxyctl <command>".
type scope = string

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds the three commands once per test run.
func binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "kmsproxy-docs-test-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+string(filepath.Separator), "./cmd/kmsproxyd", "./cmd/kmsproxyctl", "./cmd/devkms")
		cmd.Dir = harness.RepoRootT(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// help runs a binary with args and -h and returns what it printed.
func help(t testing.TB, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(binaries(t), bin), append(args, "-h")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s -h: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
	return string(out)
}

var (
	flagLineRE = regexp.MustCompile(`^  -([A-Za-z0-9][A-Za-z0-9_.-]*)(?:[ \t]|$)`)
	defaultRE  = regexp.MustCompile(`\(default (.*)\)$`)
	commandRE  = regexp.MustCompile(`^  ([a-z][a-z-]*(?: [a-z][a-z-]*)?)\s{2,}\S`)
)

// parseFlags reads flag.PrintDefaults output: a line "  -name [type]" per
// flag (with the usage on it for one-letter names), the usage indented below,
// ending in "(default X)" when the default is not the zero value.
func parseFlags(out string) []flagInfo {
	var flags []flagInfo
	for line := range strings.Lines(out) {
		line = strings.TrimRight(line, "\n")
		if m := flagLineRE.FindStringSubmatch(line); m != nil {
			flags = append(flags, flagInfo{Name: m[1]})
			// After the name: the value's placeholder ("duration",
			// "FILE"), and the usage only when it follows on the same
			// line after a tab (one-letter flags).
			if rest := line[len(m[0]):]; strings.HasSuffix(m[0], "\t") {
				line = rest
			} else {
				var ph string
				ph, line, _ = strings.Cut(rest, "\t")
				flags[len(flags)-1].Placeholder = strings.TrimSpace(ph)
			}
		} else if len(flags) == 0 || !strings.HasPrefix(line, "    \t") {
			// flag.PrintDefaults indents a usage's lines with four
			// spaces and a tab; anything else (Examples: lines) is not
			// part of a flag.
			continue
		}
		f := &flags[len(flags)-1]
		text := strings.TrimSpace(line)
		if m := defaultRE.FindStringSubmatchIndex(text); m != nil {
			f.Default = text[m[2]:m[3]]
			text = strings.TrimSpace(text[:m[0]])
		}
		if text != "" {
			f.Usage = strings.TrimSpace(f.Usage + " " + text)
		}
	}
	return flags
}

// normalizeMeaning is a meaning as the table and -h must agree on it:
// backquotes (Markdown code) and escaped pipes undone, spaces collapsed.
func normalizeMeaning(s string) string {
	s = strings.ReplaceAll(s, "`", "")
	s = strings.ReplaceAll(s, `\|`, "|")
	return strings.Join(strings.Fields(s), " ")
}

// actualFlags returns the flags of every scope, from the binaries.
func actualFlags(t testing.TB) map[scope][]flagInfo {
	t.Helper()
	got := map[scope][]flagInfo{
		"kmsproxyd": parseFlags(help(t, "kmsproxyd")),
		"devkms":    parseFlags(help(t, "devkms")),
	}
	top := help(t, "kmsproxyctl")
	if f := parseFlags(top); len(f) > 0 {
		got["kmsproxyctl"] = f
	}
	inCommands := false
	for line := range strings.Lines(top) {
		line = strings.TrimRight(line, "\n")
		if line == "Commands:" {
			inCommands = true
			continue
		}
		if !inCommands {
			continue
		}
		if line == "" {
			break
		}
		m := commandRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("cannot read the command line %q of kmsproxyctl -h", line)
		}
		got["kmsproxyctl "+m[1]] = parseFlags(help(t, "kmsproxyctl", strings.Fields(m[1])...))
	}
	for s, f := range got {
		if len(f) == 0 && s != "kmsproxyctl" {
			t.Fatalf("no flags read from %s -h: the parser is out of step with its output", s)
		}
	}
	if len(got) < 10 {
		t.Fatalf("read %d scopes from the binaries; kmsproxyctl -h lists its commands under \"Commands:\"", len(got))
	}
	return got
}

// docFlag is a flag row of docs/configuration.md.
type docFlag struct {
	Name    string
	Env     string // the environment column; "" when the table has none
	Default string // the default column, backquotes removed
	Meaning string // the meaning column, as written
	Line    int
}

var (
	headingRE = regexp.MustCompile(`^(#{2,3}) (.+?)\s*$`)
	flagCell  = regexp.MustCompile("^`--([A-Za-z0-9][A-Za-z0-9_.-]*)`$")
)

// parseReference reads docs/configuration.md: "## kmsproxyd", "## devkms"
// and "### kmsproxyctl <command>" headings open a scope; in a scope, a table
// row whose first cell is `--flag` documents that flag, with the columns the
// table's header names (environment, default).
func parseReference(text string) (map[scope][]docFlag, []string) {
	var (
		docs     = map[scope][]docFlag{}
		problems []string
		cur      scope
		cols     map[string]int
	)
	sc := bufio.NewScanner(strings.NewReader(text))
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if m := headingRE.FindStringSubmatch(line); m != nil {
			title := strings.Trim(m[2], "`")
			switch {
			case m[1] == "##" && (title == "kmsproxyd" || title == "devkms" || title == "kmsproxyctl"):
				cur = title
				if _, ok := docs[cur]; !ok && title != "kmsproxyctl" {
					docs[cur] = nil
				}
			case m[1] == "###" && strings.HasPrefix(title, "kmsproxyctl "):
				cur = title
				if _, ok := docs[cur]; !ok {
					docs[cur] = nil // a section, even with no rows yet
				}
			default:
				cur = ""
			}
			cols = nil
			continue
		}
		if !strings.HasPrefix(line, "|") {
			cols = nil
			continue
		}
		cells := splitRow(line)
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if cols == nil {
			cols = map[string]int{}
			for i, c := range cells {
				cols[strings.ToLower(c)] = i
			}
			continue
		}
		m := flagCell.FindStringSubmatch(cells[0])
		if m == nil {
			continue // the separator row, or a table of something else
		}
		if cur == "" {
			problems = append(problems, fmt.Sprintf("line %d: --%s is documented outside a kmsproxyd, devkms or kmsproxyctl <command> section", n, m[1]))
			continue
		}
		f := docFlag{Name: m[1], Line: n}
		if i, ok := cols["environment"]; ok && i < len(cells) {
			f.Env = strings.Trim(cells[i], "`")
		}
		if i, ok := cols["default"]; ok && i < len(cells) {
			f.Default = strings.ReplaceAll(cells[i], "`", "")
		}
		if i, ok := cols["meaning"]; ok && i < len(cells) {
			f.Meaning = cells[i]
		}
		docs[cur] = append(docs[cur], f)
	}
	return docs, problems
}

// splitRow splits a Markdown table row into its cells; "\|" is a pipe
// inside a cell.
func splitRow(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(line, "|")
	if strings.HasSuffix(line, "|") && !strings.HasSuffix(line, `\|`) {
		line = line[:len(line)-1]
	}
	var cells []string
	var cur strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '|':
			cur.WriteString(`\|`)
			i++
		case line[i] == '|':
			cells = append(cells, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(line[i])
		}
	}
	return append(cells, cur.String())
}

// TestConfigurationReferenceMatchesFlags is the check the reference exists
// for: every flag documented, no flag invented, defaults and environment
// variables right.
func TestConfigurationReferenceMatchesFlags(t *testing.T) {
	path := filepath.Join(harness.RepoRootT(t), "docs", "configuration.md")
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	actual := actualFlags(t)
	if *update {
		updated := updateMeanings(actual, string(text))
		if err := os.WriteFile(path, []byte(updated), 0o644); err != nil {
			t.Fatal(err)
		}
		text = []byte(updated)
	}
	for _, p := range compareReference(actual, string(text)) {
		t.Error(p)
	}
	// A backquoted phrase in a usage becomes the flag's placeholder
	// ("-sim-ca kmsproxyctl dev ca"): one word only.
	for s, flags := range actual {
		for _, f := range flags {
			if strings.ContainsAny(f.Placeholder, " \t") {
				t.Errorf("%s -h shows -%s %s: backquotes in a usage name the value, one word (e.g. `DIR`)", s, f.Name, f.Placeholder)
			}
		}
	}
}

// updateMeanings returns text with the meaning cell of every documented flag
// replaced by the flag's usage from -h.
func updateMeanings(actual map[scope][]flagInfo, text string) string {
	docs, _ := parseReference(text)
	usage := map[int]string{} // line number -> usage
	for s, rows := range docs {
		for _, d := range rows {
			for _, f := range actual[s] {
				if f.Name == d.Name && normalizeMeaning(d.Meaning) != normalizeMeaning(f.Usage) {
					usage[d.Line] = f.Usage
				}
			}
		}
	}
	lines := strings.SplitAfter(text, "\n")
	for n, u := range usage {
		line := strings.TrimRight(lines[n-1], "\n")
		i := strings.LastIndex(strings.TrimSuffix(strings.TrimSpace(line), "|"), "|")
		lines[n-1] = line[:i+1] + " " + strings.ReplaceAll(u, "|", `\|`) + " |\n"
	}
	return strings.Join(lines, "")
}

// compareReference returns every disagreement between the flags the
// binaries have and the reference text.
func compareReference(actual map[scope][]flagInfo, text string) []string {
	docs, problems := parseReference(text)
	for i, p := range problems {
		problems[i] = "docs/configuration.md " + p
	}
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	var scopes []string
	for s := range actual {
		scopes = append(scopes, s)
	}
	slices.Sort(scopes)
	for _, s := range scopes {
		documented, ok := docs[s]
		if !ok {
			add("docs/configuration.md has no section for %s (want a heading %q)", s, headingFor(s))
			continue
		}
		byName := map[string]docFlag{}
		for _, d := range documented {
			if _, dup := byName[d.Name]; dup {
				add("docs/configuration.md line %d: %s --%s is documented twice", d.Line, s, d.Name)
			}
			byName[d.Name] = d
		}
		real := map[string]bool{}
		for _, f := range actual[s] {
			real[f.Name] = true
			d, ok := byName[f.Name]
			if !ok {
				add("%s --%s is not documented in docs/configuration.md", s, f.Name)
				continue
			}
			if s == "kmsproxyd" {
				want := "KMSPROXY_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
				if f.Name == "version" {
					want = "" // an action, not a setting: kmsproxyd never reads it from the environment
				}
				if d.Env != want {
					add("docs/configuration.md line %d: kmsproxyd --%s has environment %q, want %q", d.Line, f.Name, d.Env, want)
				}
			}
			if normalizeMeaning(d.Meaning) != normalizeMeaning(f.Usage) {
				add("docs/configuration.md line %d: %s --%s means %q there, but -h says %q (go test ./test/docs -run Reference -update rewrites it)",
					d.Line, s, f.Name, normalizeMeaning(d.Meaning), f.Usage)
			}
			if f.Default != "" {
				want := strings.Trim(f.Default, `"`)
				if strings.Trim(d.Default, `"`) != want {
					add("docs/configuration.md line %d: %s --%s has default %q, -h says %q", d.Line, s, f.Name, d.Default, want)
				}
			}
		}
		for _, d := range documented {
			if !real[d.Name] {
				add("docs/configuration.md line %d: %s has no flag --%s", d.Line, s, d.Name)
			}
		}
	}
	var docScopes []string
	for s := range docs {
		docScopes = append(docScopes, s)
	}
	slices.Sort(docScopes)
	for _, s := range docScopes {
		if _, ok := actual[s]; !ok && s != "kmsproxyctl" {
			add("docs/configuration.md documents %s, which does not exist", s)
		}
	}
	return problems
}

func TestCompareReference(t *testing.T) {
	actual := map[scope][]flagInfo{
		"kmsproxyd":           {{Name: "region", Usage: "r"}, {Name: "key-bits", Default: "2048", Usage: "k"}},
		"devkms":              {{Name: "listen", Default: `"tcp://127.0.0.1:4599"`, Usage: "l"}},
		"kmsproxyctl decrypt": {{Name: "raw", Usage: "r"}},
	}
	good := "## kmsproxyd\n\n| flag | environment | default | meaning |\n| --- | --- | --- | --- |\n" +
		"| `--region` | `KMSPROXY_REGION` | | r |\n| `--key-bits` | `KMSPROXY_KEY_BITS` | `2048` | k |\n\n" +
		"## devkms\n\n| flag | default | meaning |\n| --- | --- | --- |\n| `--listen` | `tcp://127.0.0.1:4599` | l |\n\n" +
		"## kmsproxyctl\n\n### kmsproxyctl decrypt\n\n| flag | default | meaning |\n| --- | --- | --- |\n| `--raw` | | r |\n"
	tests := []struct {
		name     string
		old, new string
		want     string
	}{
		{"all documented", "", "", ""},
		{"undocumented", "| `--raw` | | r |\n", "", "kmsproxyctl decrypt --raw is not documented"},
		{"invented", "| `--raw` | | r |\n", "| `--raw` | | r |\n| `--rare` | | x |\n", "kmsproxyctl decrypt has no flag --rare"},
		{"wrong default", "| `2048` |", "| `4096` |", `kmsproxyd --key-bits has default "4096", -h says "2048"`},
		{"wrong environment", "`KMSPROXY_REGION`", "`KMSPROXY_REGON`", `has environment "KMSPROXY_REGON", want "KMSPROXY_REGION"`},
		{"missing section", "## devkms", "## devkmsx", "has no section for devkms"},
		{"command that does not exist", "### kmsproxyctl decrypt", "### kmsproxyctl decript", "documents kmsproxyctl decript, which does not exist"},
		{"flag outside a section", "## kmsproxyctl\n", "## Other\n\n| flag | meaning |\n| --- | --- |\n| `--x` | x |\n\n## kmsproxyctl\n", "--x is documented outside"},
		{"twice", "| `--raw` | | r |\n", "| `--raw` | | r |\n| `--raw` | | r |\n", "--raw is documented twice"},
		{"meaning differs from -h", "| `--raw` | | r |\n", "| `--raw` | | r, and an example pasted in |\n", `kmsproxyctl decrypt --raw means "r, and an example pasted in" there, but -h says "r"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := strings.Replace(good, tt.old, tt.new, 1)
			if tt.old != "" && text == good {
				t.Fatal("the mutation changed nothing")
			}
			got := compareReference(actual, text)
			if tt.want == "" {
				if len(got) != 0 {
					t.Errorf("problems %q, want none", got)
				}
				return
			}
			if !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, tt.want) }) {
				t.Errorf("problems %q, want one containing %q", got, tt.want)
			}
		})
	}
}

func headingFor(s scope) string {
	if strings.HasPrefix(s, "kmsproxyctl ") {
		return "### " + s
	}
	return "## " + s
}

// fenceRE matches a fenced code block and its language; only shell blocks
// (sh, bash, shell, console or unlabelled) hold command lines.
var fenceRE = regexp.MustCompile("(?s)```([a-z]*)\n(.*?)```")

// TestDocsCommandLines checks every command line in the shell code blocks of
// the README and docs/: a kmsproxyd, devkms or kmsproxyctl invocation may use
// only commands and flags the binaries have.
func TestDocsCommandLines(t *testing.T) {
	actual := actualFlags(t)
	root := harness.RepoRootT(t)
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join(root, "README.md"))
	checked := 0
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, file)
		for _, block := range fenceRE.FindAllStringSubmatch(string(data), -1) {
			switch block[1] {
			case "", "sh", "bash", "shell", "console":
			default:
				continue
			}
			text := strings.ReplaceAll(block[2], "\\\n", " ")
			for line := range strings.Lines(text) {
				for _, problem := range checkCommandLine(actual, line, &checked) {
					t.Errorf("%s: %s\n\tin: %s", rel, problem, strings.TrimSpace(line))
				}
			}
		}
	}
	if checked < 8 { // deployment.md and operations.md alone show more
		t.Errorf("only %d command lines found in the docs' code blocks", checked)
	}
	t.Logf("%d command lines checked", checked)
}

// Words that run the command after them.
var prefixCommands = map[string]bool{"sudo": true, "exec": true, "time": true, "env": true, "nohup": true}

var assignmentRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// checkCommandLine finds kmsproxyd/devkms/kmsproxyctl invocations in one
// shell line (at a command position: the start, after | && || ; or $(, or
// after sudo and variable assignments) and returns what is wrong with them.
// Arguments inside $(...) belong to the inner command and are skipped.
func checkCommandLine(actual map[scope][]flagInfo, line string, checked *int) []string {
	if i := strings.Index(line, "#"); i >= 0 && (i == 0 || line[i-1] == ' ') {
		line = line[:i]
	}
	words := strings.Fields(line)
	var problems []string
	atCommand := true
	for i := 0; i < len(words); i++ {
		w := words[i]
		switch {
		case w == "|" || w == "&&" || w == "||" || w == ";":
			atCommand = true
			continue
		case strings.Contains(w, "$("):
			atCommand = true
			w = w[strings.LastIndex(w, "$(")+2:]
		case strings.HasPrefix(w, "("):
			atCommand = true
			w = strings.TrimLeft(w, "(")
		case !atCommand:
			continue
		case prefixCommands[w] || assignmentRE.MatchString(w):
			continue
		}
		atCommand = false
		base := filepath.Base(w)
		if base != "kmsproxyd" && base != "devkms" && base != "kmsproxyctl" && base != "kmsproxyd-sim" {
			continue
		}
		s := base
		if base == "kmsproxyd-sim" {
			s = "kmsproxyd"
		}
		j := i + 1
		if base == "kmsproxyctl" {
			if j >= len(words) || strings.HasPrefix(words[j], "-") {
				continue // kmsproxyctl -h and the like
			}
			two := ""
			if j+1 < len(words) {
				two = words[j] + " " + words[j+1]
			}
			switch {
			case actual["kmsproxyctl "+two] != nil:
				s, j = "kmsproxyctl "+two, j+2
			case actual["kmsproxyctl "+words[j]] != nil:
				s, j = "kmsproxyctl "+words[j], j+1
			default:
				problems = append(problems, fmt.Sprintf("kmsproxyctl has no command %q", strings.TrimSpace(two)))
				continue
			}
		}
		*checked++
		depth := 0 // inside $( ... ) of an argument
		for ; j < len(words); j++ {
			a := words[j]
			if depth == 0 && (a == "|" || a == "&&" || a == ";" || a == "||" || strings.HasPrefix(a, ">") || strings.HasPrefix(a, "<") || a == ")") {
				j--
				break
			}
			opens, closes := strings.Count(a, "("), strings.Count(a, ")")
			inside := depth > 0 || opens > 0
			depth += opens - closes
			ends := depth < 0 // this word closes the $( ... ) the command runs in
			if ends {
				depth = 0
				a = strings.TrimRight(a, `")`)
			}
			if inside {
				continue
			}
			name, ok := strings.CutPrefix(a, "--")
			if !ok {
				if name, ok = strings.CutPrefix(a, "-"); !ok || name == "" {
					continue
				}
			}
			name, _, _ = strings.Cut(name, "=")
			if name == "h" || name == "help" {
				continue
			}
			if !slices.ContainsFunc(actual[s], func(f flagInfo) bool { return f.Name == name }) {
				problems = append(problems, fmt.Sprintf("%s has no flag --%s", s, name))
			}
			if ends {
				break
			}
		}
		i = j
	}
	return problems
}

// The parsers above must read the real formats; these pin them down.
func TestParseFlags(t *testing.T) {
	out := "Flags:\n  -attestation-ttl duration\n    \treuse (default 5m0s)\n  -json\n    \tsame as --output json\n  -sim-ca kmsproxyctl dev ca\n    \tthe directory\n  -x\tone letter (default \"a b\")\n  -long string\n    \tfirst line\n    \tsecond line (default \"vsock://:5000\")\n\nExamples:\n  kmsproxyctl x \\\n      --not-usage y\n"
	got := parseFlags(out)
	want := []flagInfo{{"attestation-ttl", "5m0s", "reuse", "duration"}, {"json", "", "same as --output json", ""}, {"sim-ca", "", "the directory", "kmsproxyctl dev ca"}, {"x", `"a b"`, "one letter", ""}, {"long", `"vsock://:5000"`, "first line second line", "string"}}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestUpdateMeanings(t *testing.T) {
	actual := map[scope][]flagInfo{"kmsproxyctl decrypt": {{Name: "raw", Usage: "write | raw"}, {Name: "json", Usage: "same"}}}
	text := "## kmsproxyctl\n\n### kmsproxyctl decrypt\n\n| flag | default | meaning |\n| --- | --- | --- |\n| `--raw` | | stale, with examples |\n| `--json` | | same |\n"
	got := updateMeanings(actual, text)
	want := strings.Replace(text, "stale, with examples", `write \| raw`, 1)
	if got != want {
		t.Errorf("updateMeanings:\n%s\nwant:\n%s", got, want)
	}
	if p := compareReference(actual, got); len(p) != 0 {
		t.Errorf("after update: %q", p)
	}
}

func TestCheckCommandLine(t *testing.T) {
	actual := map[scope][]flagInfo{
		"kmsproxyd":                {{Name: "region"}},
		"kmsproxyctl decrypt":      {{Name: "enclave"}, {Name: "raw"}},
		"kmsproxyctl policy check": {{Name: "key-policy"}},
	}
	tests := []struct {
		name, line string
		want       []string
	}{
		{"good", "kmsproxyctl decrypt --enclave vsock://16:5000 --raw > out", nil},
		{"two-word command", "sudo kmsproxyctl policy check --key-policy k.json | jq .", nil},
		{"unknown flag", "kmsproxyctl decrypt --enclav x", []string{"kmsproxyctl decrypt has no flag --enclav"}},
		{"unknown command", "kmsproxyctl decript --raw", []string{`kmsproxyctl has no command "decript --raw"`}},
		{"an argument, not a command", "sudo install -m 0755 bin/kmsproxyctl /usr/local/bin/kmsproxyctl", nil},
		{"after an assignment", "KMSPROXY_REGION=x kmsproxyd --bogus", []string{"kmsproxyd has no flag --bogus"}},
		{"command substitution in an argument", `kmsproxyctl decrypt --enclave "$(head -c 32 /dev/urandom | base64)" --raw`, nil},
		{"substitution runs the command", "X=$(kmsproxyctl decrypt --bogus)", []string{"kmsproxyctl decrypt has no flag --bogus"}},
		{"second command of a pipe", "cat x | kmsproxyctl decrypt --bogus", []string{"kmsproxyctl decrypt has no flag --bogus"}},
		{"daemon", "/usr/local/bin/kmsproxyd --region=eu-west-1 --bogus", []string{"kmsproxyd has no flag --bogus"}},
		{"after a pipe", "kmsproxyd --region x | grep --color y", nil},
		{"comment", "kmsproxyd --region x   # --not-a-flag", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := 0
			got := checkCommandLine(actual, tt.line, &n)
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
