// Package packaging checks how kmsproxyd's enclave image is built. The
// enclave's measurements (PCR0, PCR2), and with them every KMS key policy
// bound to the enclave, depend on the exact bytes of the image, so the build
// must be reproducible and the image must hold nothing but kmsproxyd and its
// policy. This package reads Dockerfile.enclave, checks the rules that keep
// it so (Check), and replays its kmsproxyd build twice in separate clean
// directories to show that the binary is byte-identical (Reproduce, behind
// "make reproducible").
package packaging

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
)

// MaxDockerfileSize bounds the Dockerfile ParseDockerfile accepts.
// Dockerfile.enclave is about 4 KiB; 256 KiB leaves room for any real
// Dockerfile while a wrong path (a binary, a log) fails fast.
const MaxDockerfileSize = 256 << 10

// KmsproxydPackage is the package the enclave image is built from.
const KmsproxydPackage = "./cmd/kmsproxyd"

// LDFlags is the linker flag value the enclave build must use: -s -w strip
// the symbol table and DWARF, -buildid= empties the Go build ID, which would
// otherwise hash the build's inputs including their paths.
const LDFlags = "-s -w -buildid="

// Instruction is one Dockerfile instruction with continuation lines joined.
type Instruction struct {
	Line  int      // line of the instruction's first line, from 1
	Cmd   string   // upper case: FROM, RUN, COPY, ...
	Flags []string // leading options, e.g. --from=build
	Args  string   // the rest of the instruction
}

// Stage is a FROM and the instructions that follow it.
type Stage struct {
	Line         int
	Image        string   // FROM's image reference
	Name         string   // the AS name; "" if none
	FromFlags    []string // e.g. --platform=...
	Instructions []Instruction
}

// Dockerfile is a parsed Dockerfile.
type Dockerfile struct {
	GlobalArgs []Instruction // ARG instructions before the first FROM
	Stages     []Stage
}

// ParseError is a Dockerfile that cannot be read as one.
type ParseError struct {
	Line int
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Line == 0 {
		return "packaging: Dockerfile: " + e.Msg
	}
	return fmt.Sprintf("packaging: Dockerfile line %d: %s", e.Line, e.Msg)
}

var instructionRE = regexp.MustCompile(`^([A-Za-z]+)(?:\s+(.*))?$`)

// ParseDockerfile reads a Dockerfile: comments and blank lines are dropped,
// lines ending in a backslash are joined with the next (comment lines inside
// a continuation are skipped, as docker does), and instructions are grouped
// into stages. Heredocs and a changed escape character are not supported.
func ParseDockerfile(src []byte) (*Dockerfile, error) {
	if len(src) > MaxDockerfileSize {
		return nil, &ParseError{Msg: fmt.Sprintf("%d bytes, over the %d-byte limit", len(src), MaxDockerfileSize)}
	}
	lines := strings.Split(strings.ReplaceAll(string(src), "\r\n", "\n"), "\n")
	var (
		df      Dockerfile
		pending strings.Builder
		start   int
	)
	flush := func() error {
		text := strings.TrimSpace(pending.String())
		pending.Reset()
		if text == "" {
			return nil
		}
		m := instructionRE.FindStringSubmatch(text)
		if m == nil {
			return &ParseError{Line: start, Msg: fmt.Sprintf("cannot read %q as an instruction", clip(text))}
		}
		in := Instruction{Line: start, Cmd: strings.ToUpper(m[1])}
		rest := strings.TrimSpace(m[2])
		for strings.HasPrefix(rest, "--") {
			flag, after, _ := strings.Cut(rest, " ")
			in.Flags = append(in.Flags, flag)
			rest = strings.TrimSpace(after)
		}
		in.Args = rest
		if strings.Contains(in.Args, "<<") && (in.Cmd == "RUN" || in.Cmd == "COPY") {
			return &ParseError{Line: start, Msg: "heredocs are not supported"}
		}
		return df.add(in)
	}
	for i, raw := range lines {
		n := i + 1
		trimmed := strings.TrimSpace(raw)
		if strings.HasPrefix(trimmed, "#") {
			if pending.Len() == 0 && strings.HasPrefix(strings.ToLower(strings.ReplaceAll(trimmed, " ", "")), "#escape=") {
				return nil, &ParseError{Line: n, Msg: "the escape parser directive is not supported"}
			}
			continue // a comment, also inside a continuation
		}
		if trimmed == "" {
			continue // blank lines, also inside a continuation (docker skips them)
		}
		if pending.Len() == 0 {
			start = n
		}
		if body, ok := strings.CutSuffix(strings.TrimRight(raw, " \t"), `\`); ok {
			pending.WriteString(body)
			pending.WriteString(" ")
			continue
		}
		pending.WriteString(raw)
		if err := flush(); err != nil {
			return nil, err
		}
	}
	if pending.Len() > 0 {
		return nil, &ParseError{Line: start, Msg: "the last instruction ends with a line continuation"}
	}
	if len(df.Stages) == 0 {
		return nil, &ParseError{Msg: "no FROM instruction"}
	}
	return &df, nil
}

func (df *Dockerfile) add(in Instruction) error {
	if in.Cmd == "FROM" {
		fields := strings.Fields(in.Args)
		st := Stage{Line: in.Line, FromFlags: in.Flags}
		switch {
		case len(fields) == 1:
		case len(fields) == 3 && strings.EqualFold(fields[1], "AS"):
			st.Name = fields[2]
		default:
			return &ParseError{Line: in.Line, Msg: fmt.Sprintf("FROM %q: want IMAGE [AS NAME]", clip(in.Args))}
		}
		if len(fields) == 0 {
			return &ParseError{Line: in.Line, Msg: "FROM without an image"}
		}
		st.Image = fields[0]
		df.Stages = append(df.Stages, st)
		return nil
	}
	if len(df.Stages) == 0 {
		if in.Cmd != "ARG" {
			return &ParseError{Line: in.Line, Msg: in.Cmd + " before the first FROM (only ARG may come first)"}
		}
		df.GlobalArgs = append(df.GlobalArgs, in)
		return nil
	}
	last := &df.Stages[len(df.Stages)-1]
	last.Instructions = append(last.Instructions, in)
	return nil
}

// Final is the last stage: the image docker build produces.
func (df *Dockerfile) Final() *Stage { return &df.Stages[len(df.Stages)-1] }

// Stage returns the stage named name, or nil.
func (df *Dockerfile) Stage(name string) *Stage {
	for i := range df.Stages {
		if df.Stages[i].Name == name {
			return &df.Stages[i]
		}
	}
	return nil
}

// Flag returns the value of the option --name=value of an instruction.
func (in Instruction) Flag(name string) (string, bool) {
	for _, f := range in.Flags {
		if v, ok := strings.CutPrefix(f, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// Copy is a COPY instruction's sources and destination.
type Copy struct {
	Line    int
	From    string // --from stage or image; "" for the build context
	Sources []string
	Dest    string
}

// Copy reads a COPY instruction (shell form: whitespace-separated paths).
func (in Instruction) Copy() (Copy, error) {
	if in.Cmd != "COPY" {
		return Copy{}, &ParseError{Line: in.Line, Msg: in.Cmd + " is not COPY"}
	}
	var words []string
	if strings.HasPrefix(in.Args, "[") {
		if err := json.Unmarshal([]byte(in.Args), &words); err != nil {
			return Copy{}, &ParseError{Line: in.Line, Msg: "COPY: malformed JSON form"}
		}
	} else {
		words = strings.Fields(in.Args)
	}
	if len(words) < 2 {
		return Copy{}, &ParseError{Line: in.Line, Msg: "COPY needs a source and a destination"}
	}
	from, _ := in.Flag("from")
	return Copy{Line: in.Line, From: from, Sources: words[:len(words)-1], Dest: words[len(words)-1]}, nil
}

// Env reads an ENV instruction's NAME=value pairs (values may be quoted);
// the legacy form "ENV NAME value" gives one pair.
func (in Instruction) Env() ([]string, error) {
	words, err := SplitWords(in.Args)
	if err != nil {
		return nil, &ParseError{Line: in.Line, Msg: "ENV: " + err.Error()}
	}
	if len(words) > 0 && !strings.Contains(words[0], "=") {
		return []string{words[0] + "=" + strings.Join(words[1:], " ")}, nil
	}
	return words, nil
}

// ExecForm returns the JSON array of an exec-form ENTRYPOINT, CMD or RUN;
// ok is false for the shell form.
func (in Instruction) ExecForm() (args []string, ok bool) {
	if !strings.HasPrefix(in.Args, "[") {
		return nil, false
	}
	if err := json.Unmarshal([]byte(in.Args), &args); err != nil {
		return nil, false
	}
	return args, true
}

// SplitWords splits a shell command line into words the way sh does for the
// quoting it supports: single quotes, double quotes and backslash escapes.
// Anything that would need a shell to mean something (variables, command
// substitution, globs, operators such as && ; | > <) is an error, so that a
// command accepted here means the same when run without a shell.
func SplitWords(s string) ([]string, error) {
	var (
		words []string
		cur   strings.Builder
		in    bool // inside a word
		quote byte
	)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case quote == '"':
			switch c {
			case '"':
				quote = 0
			case '\\':
				if i+1 < len(s) && strings.IndexByte(`"\$`+"`", s[i+1]) >= 0 {
					i++
					cur.WriteByte(s[i])
				} else {
					cur.WriteByte(c)
				}
			case '$', '`':
				return nil, fmt.Errorf("%q needs a shell: it expands %c", clip(s), c)
			default:
				cur.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote, in = c, true
		case c == '\\':
			if i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
				in = true
			}
		case c == ' ' || c == '\t' || c == '\n':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		case strings.IndexByte("$`&;|<>()*?[]{}~", c) >= 0:
			return nil, fmt.Errorf("%q needs a shell: it uses %c", clip(s), c)
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("%q has an unterminated %c quote", clip(s), quote)
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}

// GoBuild is the RUN instruction that builds kmsproxyd.
type GoBuild struct {
	Line     int
	Stage    string   // the stage it runs in
	StageEnv []string // the stage's ENV pairs, in order
	Env      []string // NAME=value words before "go"
	Flags    []string // the words between "go build" and the package, except -o and its value
	Output   string   // -o
	Package  string
	Words    []string // the whole command
}

// Command is the command line as written, for messages.
func (b *GoBuild) Command() string {
	var sb strings.Builder
	for i, w := range b.Words {
		if i > 0 {
			sb.WriteByte(' ')
		}
		if strings.ContainsAny(w, " \t\"'") || w == "" {
			w = `"` + strings.ReplaceAll(w, `"`, `\"`) + `"`
		}
		sb.WriteString(w)
	}
	return sb.String()
}

// Getenv is the value a variable has for the build: the RUN line's own
// assignment, else the stage's last ENV for it.
func (b *GoBuild) Getenv(name string) (string, bool) {
	for _, list := range [][]string{b.Env, reversed(b.StageEnv)} {
		for _, kv := range list {
			if v, ok := strings.CutPrefix(kv, name+"="); ok {
				return v, true
			}
		}
	}
	return "", false
}

func reversed(s []string) []string {
	r := slices.Clone(s)
	slices.Reverse(r)
	return r
}

var envWordRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// KmsproxydBuild finds the one RUN instruction that runs "go build ...
// ./cmd/kmsproxyd" and reads it. It must be a plain command, without shell
// operators or variables, so that Reproduce can run it verbatim.
func (df *Dockerfile) KmsproxydBuild() (*GoBuild, error) {
	var found []*GoBuild
	for _, st := range df.Stages {
		var stageEnv []string
		for _, in := range st.Instructions {
			if in.Cmd == "ENV" {
				env, err := in.Env()
				if err != nil {
					return nil, err
				}
				stageEnv = append(stageEnv, env...)
				continue
			}
			if in.Cmd != "RUN" || !strings.Contains(in.Args, "go build") || !strings.Contains(in.Args, KmsproxydPackage) {
				continue
			}
			words, err := SplitWords(in.Args)
			if err != nil {
				return nil, &ParseError{Line: in.Line, Msg: "the kmsproxyd build must be a plain command: " + err.Error()}
			}
			b := &GoBuild{Line: in.Line, Stage: st.Name, StageEnv: slices.Clone(stageEnv), Words: words}
			i := 0
			for i < len(words) && envWordRE.MatchString(words[i]) {
				b.Env = append(b.Env, words[i])
				i++
			}
			if i+1 >= len(words) || words[i] != "go" || words[i+1] != "build" {
				return nil, &ParseError{Line: in.Line, Msg: "the kmsproxyd build must be [NAME=value...] go build FLAGS -o FILE " + KmsproxydPackage}
			}
			rest := words[i+2:]
			if len(rest) == 0 || rest[len(rest)-1] != KmsproxydPackage {
				return nil, &ParseError{Line: in.Line, Msg: "the kmsproxyd build must end with the package " + KmsproxydPackage}
			}
			b.Package = rest[len(rest)-1]
			for j := 0; j < len(rest)-1; j++ {
				switch w := rest[j]; {
				case w == "-o" && j+1 < len(rest)-1:
					b.Output = rest[j+1]
					j++
				case strings.HasPrefix(w, "-o="):
					b.Output = strings.TrimPrefix(w, "-o=")
				case strings.HasPrefix(w, "-"):
					b.Flags = append(b.Flags, normalizeFlag(w))
				default:
					return nil, &ParseError{Line: in.Line, Msg: fmt.Sprintf("unexpected argument %q in the kmsproxyd build: build exactly one package", w)}
				}
			}
			if b.Output == "" {
				return nil, &ParseError{Line: in.Line, Msg: "the kmsproxyd build must name its output with -o"}
			}
			found = append(found, b)
		}
	}
	switch len(found) {
	case 0:
		return nil, &ParseError{Msg: "no RUN instruction builds " + KmsproxydPackage + " with go build"}
	case 1:
		return found[0], nil
	default:
		return nil, &ParseError{Line: found[1].Line, Msg: "kmsproxyd is built more than once"}
	}
}

// normalizeFlag writes -flag and --flag alike (go accepts both).
func normalizeFlag(w string) string {
	if strings.HasPrefix(w, "--") {
		return w[1:]
	}
	return w
}

// ContextCopies returns the COPY instructions of stage name that read from
// the build context (no --from).
func (df *Dockerfile) ContextCopies(stage string) ([]Copy, error) {
	st := df.Stage(stage)
	if st == nil {
		return nil, &ParseError{Msg: fmt.Sprintf("no stage named %q", stage)}
	}
	var out []Copy
	for _, in := range st.Instructions {
		if in.Cmd != "COPY" {
			continue
		}
		c, err := in.Copy()
		if err != nil {
			return nil, err
		}
		if c.From == "" {
			out = append(out, c)
		}
	}
	return out, nil
}

// Workdir is the stage's WORKDIR in effect before instruction index i
// ("/" when none is set).
func (st *Stage) Workdir(i int) string {
	wd := "/"
	for _, in := range st.Instructions[:i] {
		if in.Cmd == "WORKDIR" {
			wd = path.Join(wd, in.Args)
		}
	}
	return wd
}

// Violation is a rule of the enclave image's build that a Dockerfile breaks.
type Violation struct {
	Line   int
	Rule   string
	Detail string
}

func (v Violation) String() string {
	return fmt.Sprintf("line %d: %s: %s", v.Line, v.Rule, v.Detail)
}

// The rules Check enforces, by name.
const (
	RulePinned       = "pinned-base"     // every base image pinned by sha256 digest
	RuleBuilder      = "builder-image"   // the builder is the official golang image for a Go release
	RuleNoFetch      = "no-fetch"        // source comes from COPY, never ADD, git, curl or wget
	RuleBuildFlags   = "build-flags"     // CGO_ENABLED=0 -trimpath -buildvcs=false -ldflags="-s -w -buildid="
	RuleNoSimulator  = "no-simulator"    // no build tags (never nsmsim)
	RuleFinalScratch = "final-scratch"   // the final stage is FROM scratch
	RuleFinalRuns    = "final-runs"      // the final stage only COPYs and sets ENTRYPOINT
	RuleFinalFiles   = "final-files"     // exactly the binary and the policy, with fixed modes and mtimes
	RuleEntrypoint   = "exec-entrypoint" // exec-form ENTRYPOINT: the binary --policy <the policy>
)

// PolicySource is the policy file in the build context that the image bakes.
const PolicySource = "enclave/policy.yaml"

var (
	digestRE  = regexp.MustCompile(`@sha256:[0-9a-f]{64}$`)
	builderRE = regexp.MustCompile(`^golang:(1\.\d+\.\d+)-[a-z]+@sha256:[0-9a-f]{64}$`)
)

// BuilderGoVersion returns the Go release in the builder image's tag
// (golang:1.26.8-bookworm@sha256:... → "1.26.8").
func (df *Dockerfile) BuilderGoVersion() (string, bool) {
	b, err := df.KmsproxydBuild()
	if err != nil {
		return "", false
	}
	st := df.Stage(b.Stage)
	if st == nil {
		return "", false
	}
	m := builderRE.FindStringSubmatch(st.Image)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// Check returns every rule of the enclave image's build that df breaks, in
// line order; none means the Dockerfile keeps them all.
func Check(df *Dockerfile) []Violation {
	var vs []Violation
	add := func(line int, rule, format string, args ...any) {
		vs = append(vs, Violation{Line: line, Rule: rule, Detail: fmt.Sprintf(format, args...)})
	}
	stageNames := map[string]bool{}
	for _, st := range df.Stages {
		if st.Image != "scratch" && !stageNames[st.Image] && !digestRE.MatchString(st.Image) {
			add(st.Line, RulePinned, "FROM %s is not pinned by digest (IMAGE:TAG@sha256:<64 hex digits>)", st.Image)
		}
		if st.Name != "" {
			stageNames[st.Name] = true
		}
		for _, in := range st.Instructions {
			switch in.Cmd {
			case "ADD":
				add(in.Line, RuleNoFetch, "ADD can fetch URLs and git repositories; COPY the source from the build context")
			case "RUN":
				for _, w := range strings.FieldsFunc(in.Args, func(r rune) bool { return strings.ContainsRune(" \t;&|()", r) }) {
					if w == "git" || w == "curl" || w == "wget" {
						add(in.Line, RuleNoFetch, "RUN uses %s: the source must come from the build context (COPY), not from the network", w)
					}
				}
			}
			if strings.Contains(in.Args, "nsmsim") || slices.ContainsFunc(in.Flags, func(f string) bool { return strings.Contains(f, "nsmsim") }) {
				add(in.Line, RuleNoSimulator, "mentions nsmsim: the NSM simulator must never be built into the enclave image")
			}
		}
	}

	b, err := df.KmsproxydBuild()
	if err != nil {
		line := 0
		var pe *ParseError
		if errors.As(err, &pe) {
			line = pe.Line
		}
		add(line, RuleBuildFlags, "%v", err)
	} else {
		checkBuild(df, b, add)
	}
	checkFinal(df, b, add)
	slices.SortStableFunc(vs, func(a, b Violation) int { return a.Line - b.Line })
	return vs
}

func checkBuild(df *Dockerfile, b *GoBuild, add func(int, string, string, ...any)) {
	st := df.Stage(b.Stage)
	if b.Stage == "" || st == nil {
		add(b.Line, RuleBuilder, "the stage that builds kmsproxyd needs a name (FROM ... AS build) for the final stage to copy from")
	} else if !builderRE.MatchString(st.Image) {
		add(st.Line, RuleBuilder, "builder %s: want the official Go image for a Go release, pinned: golang:1.N.P-<debian release>@sha256:<digest>", st.Image)
	}
	if v, _ := b.Getenv("CGO_ENABLED"); v != "0" {
		add(b.Line, RuleBuildFlags, "CGO_ENABLED=0 must be set for the kmsproxyd build (a static binary for FROM scratch)")
	}
	if v, ok := b.Getenv("GOFLAGS"); ok && v != "" {
		add(b.Line, RuleBuildFlags, "GOFLAGS=%q adds flags the build line does not show", v)
	}
	want := map[string]bool{"-trimpath": false, "-buildvcs=false": false, "-ldflags=" + LDFlags: false}
	for _, f := range b.Flags {
		name, _, _ := strings.Cut(f, "=")
		switch {
		case name == "-tags":
			add(b.Line, RuleNoSimulator, "%s: the enclave build takes no build tags (nsmsim would add the NSM simulator)", f)
		case name == "-ldflags" && f != "-ldflags="+LDFlags:
			add(b.Line, RuleBuildFlags, "%s: want -ldflags=\"%s\" (stripped, no build ID)", f, LDFlags)
		case name == "-race" || name == "-cover" || name == "-gcflags" || name == "-asmflags" || name == "-msan" || name == "-asan" || name == "-buildmode" || name == "-mod" || name == "-modfile" || name == "-overlay" || name == "-pgo" || name == "-toolexec":
			add(b.Line, RuleBuildFlags, "%s changes what is built; the enclave build uses only -trimpath -buildvcs=false -ldflags", f)
		}
		if _, ok := want[f]; ok {
			want[f] = true
		}
	}
	for _, f := range []string{"-trimpath", "-buildvcs=false", "-ldflags=" + LDFlags} {
		if !want[f] {
			add(b.Line, RuleBuildFlags, "the kmsproxyd build lacks %s", f)
		}
	}
}

func checkFinal(df *Dockerfile, b *GoBuild, add func(int, string, string, ...any)) {
	final := df.Final()
	if len(df.Stages) < 2 {
		add(final.Line, RuleFinalScratch, "want a builder stage and a final stage")
	}
	if final.Image != "scratch" {
		add(final.Line, RuleFinalScratch, "the final stage is FROM %s; want FROM scratch (nothing but kmsproxyd and its policy in the measured image)", final.Image)
	}
	var entrypoints []Instruction
	for _, in := range final.Instructions {
		switch in.Cmd {
		case "COPY", "ENTRYPOINT":
		default:
			add(in.Line, RuleFinalRuns, "%s in the final stage: it may only COPY the image's files and set ENTRYPOINT", in.Cmd)
		}
		if in.Cmd == "ENTRYPOINT" {
			entrypoints = append(entrypoints, in)
		}
	}
	if b == nil {
		return
	}
	r, err := df.Rootfs()
	if err != nil {
		line := final.Line
		var pe *ParseError
		if errors.As(err, &pe) && pe.Line != 0 {
			line = pe.Line
		}
		add(line, RuleFinalFiles, "%v", err)
		return
	}
	for _, in := range final.Instructions {
		if in.Cmd == "COPY" && in.Line != r.Line {
			add(in.Line, RuleFinalFiles, "COPY %s: the final stage copies only %s/ from the builder", clip(in.Args), r.Dir)
		}
	}
	binOut, policyOut := df.builderOutputs(b)
	var binDest, policyDest string
	for _, e := range r.Entries {
		switch {
		case e.Dir:
		case e.Source == path.Clean(binOut) && binDest == "":
			binDest = e.Path
		case policyOut != "" && e.Source == path.Clean(policyOut) && policyDest == "":
			policyDest = e.Path
		default:
			add(r.Line, RuleFinalFiles, "%s (from %s): the image holds only kmsproxyd (the builder's -o %s) and %s", e.Path, e.Source, binOut, PolicySource)
		}
		if e.Mode == 0 {
			add(r.Line, RuleFinalFiles, "%s gets no explicit chmod: its mode would depend on the umask or the checkout", e.Path)
		}
		if e.MTime == nil {
			add(r.Line, RuleFinalFiles, "%s gets no touch -h -d @SECONDS after its last change: the build's time would reach the image", e.Path)
		}
	}
	if binDest == "" {
		add(r.Line, RuleFinalFiles, "%s does not receive the kmsproxyd binary (%s)", r.Dir, binOut)
	}
	if policyDest == "" {
		add(r.Line, RuleFinalFiles, "%s does not receive %s (the baked policy)", r.Dir, PolicySource)
	}

	if len(entrypoints) != 1 {
		add(final.Line, RuleEntrypoint, "want exactly one ENTRYPOINT in the final stage, found %d", len(entrypoints))
		return
	}
	ep := entrypoints[0]
	args, ok := ep.ExecForm()
	if !ok {
		add(ep.Line, RuleEntrypoint, "ENTRYPOINT %s is in shell form, which needs /bin/sh; write it as a JSON array", clip(ep.Args))
		return
	}
	if len(args) == 0 || (binDest != "" && args[0] != binDest) {
		add(ep.Line, RuleEntrypoint, "ENTRYPOINT %q does not start the image's binary %s", args, binDest)
	}
	if policyDest != "" && !hasPolicyArg(args, policyDest) {
		add(ep.Line, RuleEntrypoint, "ENTRYPOINT %q does not pass --policy %s", args, policyDest)
	}
}

// BuilderOutputs returns where the builder stage leaves the kmsproxyd binary
// (its go build -o) and the baked policy (where it COPYs enclave/policy.yaml;
// "" if it does not), as paths in the builder's file system.
func (df *Dockerfile) BuilderOutputs() (binary, policy string, err error) {
	b, err := df.KmsproxydBuild()
	if err != nil {
		return "", "", err
	}
	binary, policy = df.builderOutputs(b)
	return binary, policy, nil
}

func (df *Dockerfile) builderOutputs(b *GoBuild) (binary, policy string) {
	st := df.Stage(b.Stage)
	if st == nil {
		return b.Output, ""
	}
	for i, in := range st.Instructions {
		if in.Cmd != "COPY" {
			continue
		}
		c, err := in.Copy()
		if err != nil || c.From != "" || len(c.Sources) != 1 || c.Sources[0] != PolicySource {
			continue
		}
		policy = resolveDest(st.Workdir(i), c.Dest, path.Base(PolicySource))
	}
	return b.Output, policy
}

func hasPolicyArg(args []string, dest string) bool {
	for i, a := range args {
		if (a == "--policy" || a == "-policy") && i+1 < len(args) && args[i+1] == dest {
			return true
		}
		if a == "--policy="+dest || a == "-policy="+dest {
			return true
		}
	}
	return false
}

// resolveDest is where COPY puts one source file named base: into dest when
// dest ends in a slash, at dest otherwise; relative to workdir.
func resolveDest(workdir, dest, base string) string {
	p := dest
	if !path.IsAbs(p) {
		p = path.Join(workdir, p)
	}
	if strings.HasSuffix(dest, "/") || dest == "." || dest == "./" {
		return path.Join(p, base)
	}
	return path.Clean(p)
}

func clip(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
