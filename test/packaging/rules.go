package packaging

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

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
	RulePinned       = "pinned-base"      // every base image pinned by sha256 digest
	RuleBuilder      = "builder-image"    // the builder is the official golang image for a Go release
	RuleNoFetch      = "no-fetch"         // source comes from COPY, never ADD, git, curl or wget
	RulePackages     = "pinned-packages"  // every apt-get install names an exact version
	RuleLibcrypto    = "static-libcrypto" // the cgo build links a pinned libssl-dev statically
	RuleBuildFlags   = "build-flags"      // -trimpath -buildvcs=false -ldflags="-s -w -buildid= ..." and nothing that changes what is built
	RuleNoSimulator  = "no-simulator"     // only the tags netgo, osusergo, openssl (never nsmsim)
	RuleFinalScratch = "final-scratch"    // the final stage is FROM scratch
	RuleFinalRuns    = "final-runs"       // the final stage only COPYs and sets ENTRYPOINT
	RuleFinalFiles   = "final-files"      // exactly the binary and the policy, with fixed modes and mtimes
	RuleEntrypoint   = "exec-entrypoint"  // exec-form ENTRYPOINT: the binary --policy <the policy>
)

// PolicySource is the policy file in the build context that the image bakes.
const PolicySource = "enclave/policy.yaml"

// LibcryptoPackage is the Debian package whose static libcrypto.a the
// OpenSSL build of kmsproxyd links.
const LibcryptoPackage = "libssl-dev"

// VersionVar is the variable release builds stamp with -ldflags -X.
const VersionVar = "github.com/enclavekit/kmsproxy/internal/version.Version"

// The linker flags of the enclave build: -s -w strip the symbol table and
// DWARF, -buildid= empties the Go build ID (which would otherwise hash the
// build's inputs, paths included); -extldflags=-static links libcrypto and
// libc into the binary (FROM scratch has no shared libraries), needed when
// cgo is on and ignored when it is off; -X VersionVar=... stamps the release.
var (
	requiredLDFlags = []string{"-s", "-w", "-buildid="}
	staticLDFlag    = "-extldflags=-static"
)

// OpenSSLTags are the build tags of the OpenSSL build: openssl selects the
// backend; netgo and osusergo keep the net and os/user packages in pure Go,
// so that the static binary never calls glibc's NSS, which cannot be linked
// statically.
var OpenSSLTags = []string{"netgo", "osusergo", "openssl"}

var (
	digestRE  = regexp.MustCompile(`@sha256:[0-9a-f]{64}$`)
	builderRE = regexp.MustCompile(`^golang:(1\.\d+\.\d+)-[a-z]+@sha256:[0-9a-f]{64}$`)
)

// BuilderGoVersion returns the Go release in the builder image's tag
// (golang:1.26.8-bookworm@sha256:... → "1.26.8").
func (df *Dockerfile) BuilderGoVersion() (string, bool) {
	b, err := df.KmsproxydBuild(nil)
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

// Libcrypto returns the version of LibcryptoPackage the kmsproxyd build's
// stage installs ("" when it installs none, or unpinned).
func (df *Dockerfile) Libcrypto() string {
	b, err := df.KmsproxydBuild(nil)
	if err != nil {
		return ""
	}
	st := df.Stage(b.Stage)
	if st == nil {
		return ""
	}
	pkgs, _, err := st.AptPackages(len(st.Commands))
	if err != nil {
		return ""
	}
	return pkgs[LibcryptoPackage]
}

// Check returns every rule of the enclave image's build that df breaks
// when built with buildArgs (nil: the defaults), in line order; none means
// the Dockerfile keeps them all.
func Check(df *Dockerfile, buildArgs map[string]string) []Violation {
	var vs []Violation
	add := func(line int, rule, format string, args ...any) {
		vs = append(vs, Violation{Line: line, Rule: rule, Detail: fmt.Sprintf(format, args...)})
	}
	stageNames := map[string]bool{}
	for si := range df.Stages {
		st := &df.Stages[si]
		if st.Image != "scratch" && !stageNames[st.Image] && !digestRE.MatchString(st.Image) {
			add(st.Line, RulePinned, "FROM %s is not pinned by digest (IMAGE:TAG@sha256:<64 hex digits>)", st.Image)
		}
		if st.Name != "" {
			stageNames[st.Name] = true
		}
		for _, c := range st.Commands {
			text := strings.ToLower(fmt.Sprint(c))
			switch c := c.(type) {
			case *instructions.AddCommand:
				add(Line(c), RuleNoFetch, "ADD can fetch URLs and git repositories; COPY the source from the build context")
			case *instructions.RunCommand:
				for _, w := range strings.FieldsFunc(strings.Join(c.CmdLine, " "), func(r rune) bool { return strings.ContainsRune(" \t;&|()", r) }) {
					if w == "git" || w == "curl" || w == "wget" {
						add(Line(c), RuleNoFetch, "RUN uses %s: the source must come from the build context (COPY), not from the network", w)
					}
				}
			}
			if strings.Contains(text, "nsmsim") {
				add(Line(c), RuleNoSimulator, "mentions nsmsim: the NSM simulator must never be built into the enclave image")
			}
		}
		pkgs, lines, err := st.AptPackages(len(st.Commands))
		if err != nil {
			add(st.Line, RulePackages, "%v", err)
		}
		for name, version := range pkgs {
			if version == "" {
				add(lines[name], RulePackages, "apt-get install %s: pin it to an exact version (%s=VERSION); another version means another binary", name, name)
			}
		}
	}

	b, err := df.KmsproxydBuild(buildArgs)
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
	if v, ok := b.Getenv("GOFLAGS"); ok && v != "" {
		add(b.Line, RuleBuildFlags, "GOFLAGS=%q adds flags the build line does not show", v)
	}
	cgo, _ := b.Getenv("CGO_ENABLED")
	if cgo != "0" && cgo != "1" {
		add(b.Line, RuleBuildFlags, "CGO_ENABLED=%q: set it to 1 (OpenSSL backend, static) or 0 (pure Go) for the kmsproxyd build", cgo)
	}
	seen := map[string]bool{}
	for _, f := range b.Flags {
		name, _, _ := strings.Cut(f, "=")
		seen[name] = true
		switch {
		case f == "-trimpath" || f == "-buildvcs=false" || name == "-tags" || name == "-ldflags":
		case name == "-race" || name == "-cover" || name == "-gcflags" || name == "-asmflags" || name == "-msan" || name == "-asan" ||
			name == "-buildmode" || name == "-mod" || name == "-modfile" || name == "-overlay" || name == "-pgo" || name == "-toolexec" || name == "-linkshared":
			add(b.Line, RuleBuildFlags, "%s changes what is built; the enclave build uses only -tags -trimpath -buildvcs=false -ldflags", f)
		default:
			add(b.Line, RuleBuildFlags, "%s: the enclave build uses only -tags -trimpath -buildvcs=false -ldflags", f)
		}
	}
	for _, f := range []string{"-trimpath", "-buildvcs=false"} {
		if !slices.Contains(b.Flags, f) {
			add(b.Line, RuleBuildFlags, "the kmsproxyd build lacks %s", f)
		}
	}

	// Tags: the OpenSSL set, or none (a pure Go build may keep them: with
	// CGO_ENABLED=0 the openssl tag selects nothing).
	for _, tag := range b.Tags {
		if !slices.Contains(OpenSSLTags, tag) {
			add(b.Line, RuleNoSimulator, "-tags %s: the enclave build takes only the tags %s (nsmsim would add the NSM simulator)", tag, strings.Join(OpenSSLTags, ","))
		}
	}
	if cgo == "1" {
		for _, tag := range OpenSSLTags {
			if !slices.Contains(b.Tags, tag) {
				add(b.Line, RuleLibcrypto, "CGO_ENABLED=1 builds the OpenSSL backend: -tags needs %s (%s)", tag, strings.Join(OpenSSLTags, ","))
			}
		}
	}

	// Linker flags.
	if !seen["-ldflags"] {
		add(b.Line, RuleBuildFlags, "the kmsproxyd build lacks -ldflags=\"%s\"", strings.Join(requiredLDFlags, " "))
	}
	for _, f := range requiredLDFlags {
		if seen["-ldflags"] && !slices.Contains(b.LDFlags, f) {
			add(b.Line, RuleBuildFlags, "-ldflags lacks %s (stripped, no build ID)", f)
		}
	}
	for i := 0; i < len(b.LDFlags); i++ {
		f := b.LDFlags[i]
		switch {
		case slices.Contains(requiredLDFlags, f), f == staticLDFlag:
		case f == "-X" && i+1 < len(b.LDFlags) && strings.HasPrefix(b.LDFlags[i+1], VersionVar+"="):
			i++
		case strings.HasPrefix(f, "-X="+VersionVar+"="):
		default:
			add(b.Line, RuleBuildFlags, "-ldflags %s: the enclave build links with %s, %s and -X %s=VERSION only", f, strings.Join(requiredLDFlags, " "), staticLDFlag, VersionVar)
		}
	}
	if cgo == "1" {
		if !slices.Contains(b.LDFlags, staticLDFlag) {
			add(b.Line, RuleLibcrypto, "CGO_ENABLED=1 needs -ldflags %s: FROM scratch has no shared libraries", staticLDFlag)
		}
		if st != nil {
			i := slices.IndexFunc(st.Commands, func(c instructions.Command) bool { return Line(c) == b.Line })
			pkgs, _, _ := st.AptPackages(max(i, 0))
			if _, ok := pkgs[LibcryptoPackage]; !ok {
				add(b.Line, RuleLibcrypto, "CGO_ENABLED=1 links libcrypto: the builder stage must apt-get install %s=VERSION before the build", LibcryptoPackage)
			}
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
	var entrypoints []instructions.Command
	for _, c := range final.Commands {
		switch c.(type) {
		case *instructions.CopyCommand:
		case *instructions.EntrypointCommand:
			entrypoints = append(entrypoints, c)
		default:
			add(Line(c), RuleFinalRuns, "%s in the final stage: it may only COPY the image's files and set ENTRYPOINT", strings.ToUpper(c.Name()))
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
	for _, c := range final.Commands {
		if cp, ok := c.(*instructions.CopyCommand); ok && Line(cp) != r.Line {
			add(Line(cp), RuleFinalFiles, "COPY %s: the final stage copies only %s/ from the builder", clip(strings.Join(cp.SourcePaths, " ")), r.Dir)
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
	args, ok := ExecForm(ep)
	if !ok {
		add(Line(ep), RuleEntrypoint, "ENTRYPOINT %s is in shell form, which needs /bin/sh; write it as a JSON array", clip(fmt.Sprint(ep)))
		return
	}
	if len(args) == 0 || (binDest != "" && args[0] != binDest) {
		add(Line(ep), RuleEntrypoint, "ENTRYPOINT %q does not start the image's binary %s", args, binDest)
	}
	if policyDest != "" && !hasPolicyArg(args, policyDest) {
		add(Line(ep), RuleEntrypoint, "ENTRYPOINT %q does not pass --policy %s", args, policyDest)
	}
}

// BuilderOutputs returns where the builder stage leaves the kmsproxyd binary
// (its go build -o) and the baked policy (where it COPYs enclave/policy.yaml;
// "" if it does not), as paths in the builder's file system.
func (df *Dockerfile) BuilderOutputs() (binary, policy string, err error) {
	b, err := df.KmsproxydBuild(nil)
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
	for i, c := range st.Commands {
		cp, ok := c.(*instructions.CopyCommand)
		if !ok || cp.From != "" || len(cp.SourcePaths) != 1 || cp.SourcePaths[0] != PolicySource {
			continue
		}
		policy = resolveDest(st.Workdir(i), cp.DestPath, path.Base(PolicySource))
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
