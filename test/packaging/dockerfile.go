// Package packaging checks how kmsproxyd's enclave image is built. The
// enclave's measurements (PCR0, PCR2), and with them every KMS key policy
// bound to the enclave, depend on the exact bytes of the image, so the build
// must be reproducible and the image must hold nothing but kmsproxyd and its
// policy. This package reads Dockerfile.enclave with BuildKit's own parser
// (the one docker build runs), checks kmsproxy's rules on top of it (Check),
// and replays its kmsproxyd build twice in separate clean directories to
// show that the binary is byte-identical (Reproduce, behind
// "make reproducible").
package packaging

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// MaxDockerfileSize bounds the Dockerfile ParseDockerfile accepts.
// Dockerfile.enclave is about 6 KiB; 256 KiB leaves room for any real
// Dockerfile while a wrong path (a binary, a log) fails fast.
const MaxDockerfileSize = 256 << 10

// KmsproxydPackage is the package the enclave image is built from.
const KmsproxydPackage = "./cmd/kmsproxyd"

// Dockerfile is a Dockerfile as BuildKit reads it: the ARGs before the first
// FROM and the stages with their typed instructions.
type Dockerfile struct {
	MetaArgs []instructions.ArgCommand
	Stages   []Stage
}

// Stage is a FROM and the instructions that follow it.
type Stage struct {
	Line     int
	Image    string // FROM's image reference
	Name     string // the AS name (BuildKit lower-cases it); "" if none
	Platform string // FROM --platform
	Commands []instructions.Command
}

// ParseError is a Dockerfile that cannot be read as one, or whose
// kmsproxyd build cannot be read as this package needs it.
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

// ParseDockerfile reads a Dockerfile with BuildKit's parser and instruction
// reader: continuation lines, comments, parser directives, JSON and shell
// forms and instruction flags mean what they mean to docker build.
func ParseDockerfile(src []byte) (*Dockerfile, error) {
	if len(src) > MaxDockerfileSize {
		return nil, &ParseError{Msg: fmt.Sprintf("%d bytes, over the %d-byte limit", len(src), MaxDockerfileSize)}
	}
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		return nil, buildkitError(err)
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return nil, buildkitError(err)
	}
	if len(stages) == 0 {
		return nil, &ParseError{Msg: "no FROM instruction"}
	}
	df := &Dockerfile{MetaArgs: metaArgs}
	for _, st := range stages {
		df.Stages = append(df.Stages, Stage{
			Line: rangeLine(st.Location), Image: st.BaseName, Name: st.Name, Platform: st.Platform, Commands: st.Commands,
		})
	}
	return df, nil
}

func buildkitError(err error) error {
	var le *parser.LocationError
	line := 0
	if errors.As(err, &le) && len(le.Locations) > 0 {
		line = rangeLine(le.Locations[0])
	}
	return &ParseError{Line: line, Msg: err.Error()}
}

func rangeLine(r []parser.Range) int {
	if len(r) == 0 {
		return 0
	}
	return r[0].Start.Line
}

// Line is the line an instruction starts on, from 1.
func Line(c instructions.Command) int { return rangeLine(c.Location()) }

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

// Copy is a COPY instruction's sources and destination.
type Copy struct {
	Line    int
	From    string // --from stage or image; "" for the build context
	Sources []string
	Dest    string
}

func copyOf(c *instructions.CopyCommand) Copy {
	return Copy{Line: Line(c), From: c.From, Sources: c.SourcePaths, Dest: c.DestPath}
}

// ExecForm returns the exec-form (JSON array) arguments of an ENTRYPOINT,
// CMD or RUN; ok is false for the shell form.
func ExecForm(c instructions.Command) (args []string, ok bool) {
	var cl instructions.ShellDependantCmdLine
	switch c := c.(type) {
	case *instructions.EntrypointCommand:
		cl = c.ShellDependantCmdLine
	case *instructions.CmdCommand:
		cl = c.ShellDependantCmdLine
	case *instructions.RunCommand:
		cl = c.ShellDependantCmdLine
	default:
		return nil, false
	}
	if cl.PrependShell {
		return nil, false
	}
	return cl.CmdLine, true
}

// shellCommand is a shell-form RUN's command text; ok is false for the
// exec form and for heredocs.
func shellCommand(r *instructions.RunCommand) (string, bool) {
	if !r.PrependShell || len(r.Files) > 0 || len(r.CmdLine) != 1 {
		return "", false
	}
	return r.CmdLine[0], true
}

// Workdir is the stage's WORKDIR in effect before instruction index i
// ("/" when none is set).
func (st *Stage) Workdir(i int) string {
	wd := "/"
	for _, c := range st.Commands[:i] {
		if w, ok := c.(*instructions.WorkdirCommand); ok {
			wd = path.Join(wd, w.Path)
		}
	}
	return wd
}

// ContextCopies returns the COPY instructions of stage name that read from
// the build context (no --from).
func (df *Dockerfile) ContextCopies(stage string) ([]Copy, error) {
	st := df.Stage(stage)
	if st == nil {
		return nil, &ParseError{Msg: fmt.Sprintf("no stage named %q", stage)}
	}
	var out []Copy
	for _, c := range st.Commands {
		if cp, ok := c.(*instructions.CopyCommand); ok && cp.From == "" {
			out = append(out, copyOf(cp))
		}
	}
	return out, nil
}

// lexer is BuildKit's word splitter and variable expander, with the
// Dockerfile's default escape character.
var lexer = shell.NewLex('\\')

// SplitWords splits a shell command line into words as sh would, expanding
// $NAME and ${NAME} from env (NAME=value pairs), with BuildKit's lexer.
// Anything that would need a real shell to mean what it says is an error:
// a variable env does not set, command substitution, operators such as
// && ; | > <, globs. A command accepted here means the same run without a
// shell, which is how Reproduce runs it.
func SplitWords(s string, env []string) ([]string, error) {
	if strings.ContainsAny(s, "`") || strings.Contains(s, "$(") {
		return nil, fmt.Errorf("%q needs a shell: command substitution", clip(s))
	}
	getter := shell.EnvsFromSlice(env)
	res, err := lexer.ProcessWordWithMatches(s, getter)
	if err != nil {
		return nil, fmt.Errorf("%q: %v", clip(s), err)
	}
	if len(res.Unmatched) > 0 {
		var names []string
		for n := range res.Unmatched {
			names = append(names, n)
		}
		slices.Sort(names)
		return nil, fmt.Errorf("%q uses $%s, which no ARG or ENV before it sets", clip(s), strings.Join(names, ", $"))
	}
	words, err := lexer.ProcessWords(s, getter)
	if err != nil {
		return nil, fmt.Errorf("%q: %v", clip(s), err)
	}
	for _, w := range words {
		if strings.ContainsAny(w, "&;|<>()*?[]~") {
			return nil, fmt.Errorf("%q needs a shell: %q", clip(s), w)
		}
	}
	return words, nil
}

// Env is the environment a RUN instruction sees from the Dockerfile: the
// stage's ENV and ARG instructions before it, in order, ARG values taken
// from buildArgs when given there (docker build --build-arg), their
// defaults otherwise, each expanded as docker expands them.
func (st *Stage) Env(before int, buildArgs map[string]string) ([]string, error) {
	var env []string
	set := func(k, v string) {
		env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, k+"=") })
		env = append(env, k+"="+v)
	}
	for _, c := range st.Commands[:before] {
		switch c := c.(type) {
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				v, _, err := lexer.ProcessWord(kv.Value, shell.EnvsFromSlice(env))
				if err != nil {
					return nil, &ParseError{Line: Line(c), Msg: "ENV " + kv.Key + ": " + err.Error()}
				}
				set(kv.Key, v)
			}
		case *instructions.ArgCommand:
			for _, a := range c.Args {
				if v, ok := buildArgs[a.Key]; ok {
					set(a.Key, v)
					continue
				}
				v, _, err := lexer.ProcessWord(a.ValueString(), shell.EnvsFromSlice(env))
				if err != nil {
					return nil, &ParseError{Line: Line(c), Msg: "ARG " + a.Key + ": " + err.Error()}
				}
				set(a.Key, v)
			}
		}
	}
	return env, nil
}

// GoBuild is the RUN instruction that builds kmsproxyd, read with the
// build arguments it was asked for.
type GoBuild struct {
	Line     int
	Stage    string   // the stage it runs in
	StageEnv []string // what the stage's ENV and ARG set, in order
	Env      []string // NAME=value words before "go"
	Flags    []string // the words between "go build" and the package, except -o and its value
	Tags     []string // -tags, split
	LDFlags  []string // -ldflags, split into fields
	Output   string   // -o
	Package  string
	Words    []string // the whole command, variables expanded
	Text     string   // the command as written
}

// Command is the command line as expanded, for messages.
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
// assignment, else the stage's last ENV or ARG for it.
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

func isAssignment(w string) bool {
	name, _, ok := strings.Cut(w, "=")
	if !ok || name == "" {
		return false
	}
	for i, r := range name {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// KmsproxydBuild finds the one RUN instruction that runs "go build ...
// ./cmd/kmsproxyd" and reads it with buildArgs (nil: the ARG defaults, as
// a plain docker build). It must be a plain command, so that Reproduce can
// run it verbatim.
func (df *Dockerfile) KmsproxydBuild(buildArgs map[string]string) (*GoBuild, error) {
	var found []*GoBuild
	for si := range df.Stages {
		st := &df.Stages[si]
		for i, c := range st.Commands {
			r, ok := c.(*instructions.RunCommand)
			if !ok {
				continue
			}
			text := strings.Join(r.CmdLine, " ")
			if !strings.Contains(text, "go build") || !strings.Contains(text, KmsproxydPackage) {
				continue
			}
			line := Line(r)
			cmd, ok := shellCommand(r)
			if !ok {
				return nil, &ParseError{Line: line, Msg: "the kmsproxyd build must be a shell-form RUN without heredocs"}
			}
			if len(r.FlagsUsed) > 0 {
				return nil, &ParseError{Line: line, Msg: fmt.Sprintf("the kmsproxyd build's RUN takes no flags (found --%s): mounts and networks are inputs the build line does not show", strings.Join(r.FlagsUsed, ", --"))}
			}
			env, err := st.Env(i, buildArgs)
			if err != nil {
				return nil, err
			}
			words, err := SplitWords(cmd, env)
			if err != nil {
				return nil, &ParseError{Line: line, Msg: "the kmsproxyd build must be a plain command: " + err.Error()}
			}
			b := &GoBuild{Line: line, Stage: st.Name, StageEnv: env, Words: words, Text: cmd}
			j := 0
			for j < len(words) && isAssignment(words[j]) {
				b.Env = append(b.Env, words[j])
				j++
			}
			if j+1 >= len(words) || words[j] != "go" || words[j+1] != "build" {
				return nil, &ParseError{Line: line, Msg: "the kmsproxyd build must be [NAME=value...] go build FLAGS -o FILE " + KmsproxydPackage}
			}
			rest := words[j+2:]
			if len(rest) == 0 || rest[len(rest)-1] != KmsproxydPackage {
				return nil, &ParseError{Line: line, Msg: "the kmsproxyd build must end with the package " + KmsproxydPackage}
			}
			b.Package = rest[len(rest)-1]
			for k := 0; k < len(rest)-1; k++ {
				w := rest[k]
				if strings.HasPrefix(w, "--") {
					w = w[1:] // go accepts -flag and --flag alike
				}
				name, value, hasValue := strings.Cut(w, "=")
				switch {
				case name == "-o" && !hasValue && k+1 < len(rest)-1:
					b.Output = rest[k+1]
					k++
				case name == "-o":
					b.Output = value
				case (name == "-tags" || name == "-ldflags") && !hasValue:
					if k+1 >= len(rest)-1 {
						return nil, &ParseError{Line: line, Msg: name + " needs a value"}
					}
					k++
					w, value = name+"="+rest[k], rest[k]
					fallthrough
				case strings.HasPrefix(w, "-"):
					b.Flags = append(b.Flags, w)
					if name == "-tags" {
						b.Tags = strings.FieldsFunc(value, func(r rune) bool { return r == ',' || r == ' ' })
					}
					if name == "-ldflags" {
						b.LDFlags = strings.Fields(value)
					}
				default:
					return nil, &ParseError{Line: line, Msg: fmt.Sprintf("unexpected argument %q in the kmsproxyd build: build exactly one package", w)}
				}
			}
			if b.Output == "" {
				return nil, &ParseError{Line: line, Msg: "the kmsproxyd build must name its output with -o"}
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

// AptPackages returns the packages the stage installs with apt-get install
// before instruction index before, with the version each is pinned to (""
// when it is not pinned), and the line of each install.
func (st *Stage) AptPackages(before int) (pkgs map[string]string, lines map[string]int, err error) {
	pkgs, lines = map[string]string{}, map[string]int{}
	for _, c := range st.Commands[:before] {
		r, ok := c.(*instructions.RunCommand)
		if !ok {
			continue
		}
		cmd, ok := shellCommand(r)
		if !ok || !strings.Contains(cmd, "apt-get") {
			continue
		}
		for _, part := range strings.Split(cmd, "&&") {
			words, err := lexer.ProcessWords(part, shell.EnvsFromSlice(nil))
			if err != nil {
				return nil, nil, &ParseError{Line: Line(r), Msg: err.Error()}
			}
			if len(words) < 2 || words[0] != "apt-get" || words[1] != "install" {
				continue
			}
			for _, w := range words[2:] {
				if strings.HasPrefix(w, "-") {
					continue
				}
				name, version, _ := strings.Cut(w, "=")
				pkgs[name] = version
				lines[name] = Line(r)
			}
		}
	}
	return pkgs, lines, nil
}

func clip(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
