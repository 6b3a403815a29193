package packaging

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/enclavekit/kmsproxy/test/internal/harness"
	"github.com/google/go-cmp/cmp"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

func TestDockerfileEnclaveKeepsTheRules(t *testing.T) {
	df := enclaveDockerfile(t)
	// Both images: the default (OpenSSL) and the pure Go one a build
	// argument away.
	for _, args := range []map[string]string{nil, {"CGO_ENABLED": "0"}, {"VERSION": "v1.4.2"}} {
		if vs := Check(df, args); len(vs) > 0 {
			for _, v := range vs {
				t.Errorf("Dockerfile.enclave with build arguments %v: %s", args, v)
			}
		}
	}

	// The exact build lines make reproducible replays.
	ldflags := "-ldflags=-s -w -buildid= -extldflags=-static -X " + VersionVar + "="
	for _, tt := range []struct {
		args    map[string]string
		cgo     string
		ldflags string
	}{
		{nil, "1", ldflags},
		{map[string]string{"CGO_ENABLED": "0", "VERSION": "v1.4.2"}, "0", ldflags + "v1.4.2"},
	} {
		b, err := df.KmsproxydBuild(tt.args)
		if err != nil {
			t.Fatal(err)
		}
		wantWords := []string{"go", "build", "-tags", "netgo,osusergo,openssl", "-trimpath", "-buildvcs=false", tt.ldflags, "-o", "/out/kmsproxyd", "./cmd/kmsproxyd"}
		if diff := cmp.Diff(wantWords, b.Words); diff != "" {
			t.Errorf("kmsproxyd build line with %v (-want +got):\n%s", tt.args, diff)
		}
		if v, _ := b.Getenv("CGO_ENABLED"); v != tt.cgo {
			t.Errorf("CGO_ENABLED=%q with %v, want %s", v, tt.args, tt.cgo)
		}
	}
	if v := df.Libcrypto(); !regexp.MustCompile(`^3\.\d+\.\d+-\S+$`).MatchString(v) {
		t.Errorf("libssl-dev pinned to %q, want an exact OpenSSL 3 Debian version", v)
	}

	final := df.Final()
	if final.Image != "scratch" {
		t.Errorf("final stage FROM %s, want scratch", final.Image)
	}
	var ep []string
	for _, c := range final.Commands {
		if e, ok := c.(*instructions.EntrypointCommand); ok {
			ep, _ = ExecForm(e)
		}
	}
	if diff := cmp.Diff([]string{"/kmsproxyd", "--policy", "/etc/kmsproxy/policy.yaml"}, ep); diff != "" {
		t.Errorf("ENTRYPOINT (-want +got):\n%s", diff)
	}
}

// The builder's Go release must satisfy go.mod and be the one the module is
// tested with here, so that make reproducible's hash is the image's hash.
func TestDockerfileBuilderMatchesGoVersion(t *testing.T) {
	df := enclaveDockerfile(t)
	builder, ok := df.BuilderGoVersion()
	if !ok {
		t.Fatal("cannot read the builder image's Go release")
	}
	m := regexp.MustCompile(`(?m)^go (1\.\d+)(?:\.\d+)?$`).FindSubmatch(readRepoFile(t, "go.mod"))
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	if minor := string(m[1]); !strings.HasPrefix(builder, minor+".") {
		t.Errorf("builder image has Go %s, go.mod says go %s: use the newest %s.x release", builder, minor, minor)
	}
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		t.Fatal(err)
	}
	if local := strings.TrimSpace(string(out)); local != "go"+builder {
		t.Logf("note: local toolchain %s, builder image go%s: make reproducible's hash will not be the image binary's", local, builder)
	}
}

// Every package of this module that kmsproxyd imports must be inside a
// directory the builder stage copies, or the image build fails (and so does
// Reproduce, which copies the same).
func TestDockerfileCopiesEveryPackage(t *testing.T) {
	df := enclaveDockerfile(t)
	b, err := df.KmsproxydBuild(nil)
	if err != nil {
		t.Fatal(err)
	}
	copies, err := df.ContextCopies(b.Stage)
	if err != nil {
		t.Fatal(err)
	}
	var copied []string
	for _, c := range copies {
		for _, s := range c.Sources {
			copied = append(copied, filepath.Clean(s))
		}
	}
	for _, f := range []string{"go.mod", "go.sum", PolicySource} {
		if !slices.Contains(copied, f) {
			t.Errorf("the builder stage does not copy %s", f)
		}
	}
	root := harness.RepoRootT(t)
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}\t{{.Dir}}{{end}}", KmsproxydPackage)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	n := 0
	for line := range strings.Lines(string(out)) {
		ip, dir, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if !ok || !strings.HasPrefix(ip, modulePath+"/") {
			continue
		}
		n++
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(copied, func(c string) bool { return rel == c || strings.HasPrefix(rel, c+string(filepath.Separator)) }) {
			t.Errorf("kmsproxyd imports %s from %s, which the builder stage does not copy", ip, rel)
		}
	}
	if n < 2 {
		t.Fatalf("go list found %d packages of this module behind kmsproxyd; want the command and its internal packages", n)
	}
}

func TestCheckCatchesBrokenDockerfiles(t *testing.T) {
	orig := string(readRepoFile(t, "Dockerfile.enclave"))
	const digest = "@sha256:a688600ca24f8a4d3ca77f95b0dd40704a9fc787c826660eb7ba0b641b8b175d"
	const build = `RUN go build -tags netgo,osusergo,openssl -trimpath -buildvcs=false -ldflags="-s -w -buildid= -extldflags=-static -X github.com/enclavekit/kmsproxy/internal/version.Version=${VERSION}" -o /out/kmsproxyd ./cmd/kmsproxyd`
	const entry = `ENTRYPOINT ["/kmsproxyd", "--policy", "/etc/kmsproxy/policy.yaml"]`
	const apt = "libssl3=3.0.22-1~deb12u2 libssl-dev=3.0.22-1~deb12u2"
	for _, s := range []string{digest, build, entry, apt, "ARG CGO_ENABLED=1\n", "FROM scratch\n", "COPY internal/ internal/\n", "ENV GOTOOLCHAIN=local GOFLAGS=",
		" \\\n && cp /out/policy.yaml /rootfs/etc/kmsproxy/policy.yaml", " \\\n && chmod 0444 /rootfs/etc/kmsproxy/policy.yaml",
		" \\\n && touch -h -d @0 /rootfs/kmsproxyd /rootfs/etc/kmsproxy/policy.yaml /rootfs/etc/kmsproxy /rootfs/etc", "COPY --from=build /rootfs/ /\n"} {
		if !strings.Contains(orig, s) {
			t.Fatalf("Dockerfile.enclave no longer contains %q: update this test's mutations", s)
		}
	}
	ldflags := func(old, new string) string {
		return strings.Replace(build, old, new, 1)
	}
	tests := []struct {
		name     string
		old, new string
		args     map[string]string // build arguments; nil: the defaults
		want     string
	}{
		{name: "tag without digest", old: digest, new: "", want: RulePinned},
		{name: "other builder image", old: "golang:1.26.8-bookworm" + digest, new: "example.com/go:1.26" + digest, want: RuleBuilder},
		{name: "git clone", old: "COPY internal/ internal/\n", new: "RUN git clone https://example.com/kmsproxy /src\n", want: RuleNoFetch},
		{name: "ADD", old: "COPY internal/ internal/\n", new: "ADD internal/ internal/\n", want: RuleNoFetch},
		{name: "curl", old: "COPY internal/ internal/\n", new: "RUN curl -sSfo /src/x.tgz https://example.com/x.tgz\n", want: RuleNoFetch},
		{name: "libssl-dev not pinned", old: apt, new: "libssl-dev", want: RulePackages},
		{name: "another package not pinned", old: apt, new: apt + " zlib1g-dev", want: RulePackages},
		{name: "no libssl-dev", old: apt, new: "ca-certificates=20230311", want: RuleLibcrypto},
		{name: "openssl tag missing", old: build, new: ldflags("-tags netgo,osusergo,openssl", "-tags netgo,osusergo"), want: RuleLibcrypto},
		{name: "not static", old: build, new: ldflags(" -extldflags=-static", ""), want: RuleLibcrypto},
		{name: "cgo neither on nor off", old: "ARG CGO_ENABLED=1\n", new: "ARG CGO_ENABLED\n", want: RuleBuildFlags},
		{name: "cgo build argument typo", args: map[string]string{"CGO_ENABLED": "yes"}, want: RuleBuildFlags},
		{name: "no trimpath", old: build, new: ldflags(" -trimpath", ""), want: RuleBuildFlags},
		{name: "vcs stamp", old: build, new: ldflags(" -buildvcs=false", ""), want: RuleBuildFlags},
		{name: "not stripped", old: build, new: ldflags(`"-s -w `, `"`), want: RuleBuildFlags},
		{name: "build id kept", old: build, new: ldflags(" -buildid=", ""), want: RuleBuildFlags},
		{name: "another -X", old: build, new: ldflags("-X github.com", "-X main.debug=1 -X github.com"), want: RuleBuildFlags},
		{name: "extra linker flag", old: build, new: ldflags("-extldflags=-static", "-extldflags=-static -linkmode=internal"), want: RuleBuildFlags},
		{name: "race", old: build, new: ldflags("go build", "go build -race"), want: RuleBuildFlags},
		{name: "gcflags", old: build, new: ldflags("go build", "go build -gcflags=all=-N"), want: RuleBuildFlags},
		{name: "GOFLAGS", old: "ENV GOTOOLCHAIN=local GOFLAGS=", new: "ENV GOTOOLCHAIN=local GOFLAGS=-tags=nsmsim", want: RuleBuildFlags},
		{name: "shell in build line", old: build, new: build + " && ls /out", want: RuleBuildFlags},
		{name: "undeclared variable", old: build, new: ldflags("${VERSION}", "${RELEASE}"), want: RuleBuildFlags},
		{name: "command substitution", old: build, new: ldflags("${VERSION}", "$(git describe)"), want: RuleBuildFlags},
		{name: "mount on the build", old: build, new: strings.Replace(build, "RUN go", "RUN --network=host go", 1), want: RuleBuildFlags},
		{name: "no build", old: build, new: "RUN go vet ./...", want: RuleBuildFlags},
		{name: "simulator tag", old: build, new: ldflags("openssl", "openssl,nsmsim"), want: RuleNoSimulator},
		{name: "other tag", old: build, new: ldflags("openssl", "openssl,debug"), want: RuleNoSimulator},
		{name: "simulator through a build argument", old: "ARG VERSION=\n", new: "ARG VERSION=\nARG TAGS=netgo\n", args: map[string]string{"TAGS": "nsmsim"}, want: RuleNoSimulator},
		{name: "final from debian", old: "FROM scratch\n", new: "FROM debian:bookworm-slim" + digest + "\n", want: RuleFinalScratch},
		{name: "RUN in final", old: entry, new: `RUN ["/kmsproxyd", "-version"]` + "\n" + entry, want: RuleFinalRuns},
		{name: "ENV in final", old: entry, new: "ENV KMSPROXY_REGION=eu-west-1\n" + entry, want: RuleFinalRuns},
		{name: "extra file", old: entry, new: "COPY enclave/policy.example.yaml /etc/kmsproxy/example.yaml\n" + entry, want: RuleFinalFiles},
		{name: "policy not in rootfs", old: " \\\n && cp /out/policy.yaml /rootfs/etc/kmsproxy/policy.yaml", new: "", want: RuleFinalFiles},
		{name: "policy not chmodded", old: " \\\n && chmod 0444 /rootfs/etc/kmsproxy/policy.yaml", new: "", want: RuleFinalFiles},
		{name: "no fixed mtimes", old: " \\\n && touch -h -d @0 /rootfs/kmsproxyd /rootfs/etc/kmsproxy/policy.yaml /rootfs/etc/kmsproxy /rootfs/etc", new: "", want: RuleFinalFiles},
		{name: "directory mtime not fixed", old: "/rootfs/etc/kmsproxy /rootfs/etc\n", new: "/rootfs/etc/kmsproxy\n", want: RuleFinalFiles},
		{name: "extra file in rootfs", old: "/rootfs/etc/kmsproxy /rootfs/etc\n", new: "/rootfs/etc/kmsproxy /rootfs/etc && cp /out/kmsproxyd /rootfs/etc/extra && chmod 0555 /rootfs/etc/extra && touch -h -d @0 /rootfs/etc/extra /rootfs/etc\n", want: RuleFinalFiles},
		{name: "shell in rootfs", old: "/rootfs/etc/kmsproxy /rootfs/etc\n", new: "/rootfs/etc/kmsproxy /rootfs/etc && ln -s /bin/sh /rootfs/sh\n", want: RuleFinalFiles},
		{name: "rootfs not copied", old: "COPY --from=build /rootfs/ /\n", new: "COPY --from=build /out/kmsproxyd /kmsproxyd\n", want: RuleFinalFiles},
		{name: "shell-form entrypoint", old: entry, new: "ENTRYPOINT /kmsproxyd --policy /etc/kmsproxy/policy.yaml", want: RuleEntrypoint},
		{name: "entrypoint without policy", old: entry, new: `ENTRYPOINT ["/kmsproxyd"]`, want: RuleEntrypoint},
		{name: "entrypoint runs a shell", old: entry, new: `ENTRYPOINT ["/bin/sh", "-c", "/kmsproxyd --policy /etc/kmsproxy/policy.yaml"]`, want: RuleEntrypoint},
		{name: "two entrypoints", old: entry, new: entry + "\n" + entry, want: RuleEntrypoint},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			df := enclaveDockerfile(t)
			if tt.old != "" {
				df = mutate(t, orig, tt.old, tt.new)
			}
			if tt.name == "simulator through a build argument" {
				df = mutate(t, strings.Replace(orig, "-tags netgo,osusergo,openssl", "-tags ${TAGS}", 1), tt.old, tt.new)
			}
			vs := Check(df, tt.args)
			var rules []string
			for _, v := range vs {
				rules = append(rules, v.Rule)
			}
			if !slices.Contains(rules, tt.want) {
				t.Errorf("Check found %v, want a %s violation", vs, tt.want)
			}
		})
	}
}

// TestParseDockerfile checks what this package takes from BuildKit's
// reading: stage lines, names, images and typed instructions.
func TestParseDockerfile(t *testing.T) {
	src := "# syntax=docker/dockerfile:1\nARG V=1\nFROM golang:1 AS Build\nRUN a \\\n  # inside\n  b\nCOPY --from=x --chmod=0444 a /b\n\nfrom scratch\nENTRYPOINT [\"/b\"]\n"
	df, err := ParseDockerfile([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		Line         int
		Image, Name  string
		Instructions []string
	}
	var stages []got
	for _, st := range df.Stages {
		g := got{Line: st.Line, Image: st.Image, Name: st.Name}
		for _, c := range st.Commands {
			g.Instructions = append(g.Instructions, fmt.Sprintf("%d %T", Line(c), c))
		}
		stages = append(stages, g)
	}
	want := []got{
		{Line: 3, Image: "golang:1", Name: "build", Instructions: []string{"4 *instructions.RunCommand", "7 *instructions.CopyCommand"}},
		{Line: 9, Image: "scratch", Instructions: []string{"10 *instructions.EntrypointCommand"}},
	}
	if diff := cmp.Diff(want, stages); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if len(df.MetaArgs) != 1 || df.MetaArgs[0].Args[0].Key != "V" {
		t.Errorf("meta args %+v", df.MetaArgs)
	}
	run := df.Stages[0].Commands[0].(*instructions.RunCommand)
	if cmd, ok := shellCommand(run); !ok || strings.Join(strings.Fields(cmd), " ") != "a b" {
		t.Errorf("RUN command %q (shell form %v), want the continuation joined without the comment", cmd, ok)
	}
	cp := copyOf(df.Stages[0].Commands[1].(*instructions.CopyCommand))
	if diff := cmp.Diff(Copy{Line: 7, From: "x", Sources: []string{"a"}, Dest: "/b"}, cp); diff != "" {
		t.Errorf("COPY (-want +got):\n%s", diff)
	}
	if args, ok := ExecForm(df.Stages[1].Commands[0]); !ok || !slices.Equal(args, []string{"/b"}) {
		t.Errorf("ENTRYPOINT exec form %q, %v", args, ok)
	}
}

func TestParseDockerfileErrors(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"empty", "# nothing\n", "file with no instructions"},
		{"instruction before FROM", "RUN true\nFROM scratch\n", "no build stage"},
		{"dangling continuation", "FROM scratch\nCOPY a \\\n", "COPY requires at least two arguments"},
		{"FROM with junk", "FROM a b c d\n", "FROM requires either one or three arguments"},
		{"not an instruction", "FROM scratch\n=x\n", "unknown instruction"},
		{"unknown flag", "FROM scratch\nCOPY --bogus=1 a b\n", "unknown flag"},
		{"over the limit", "FROM scratch\n#" + strings.Repeat("x", MaxDockerfileSize), "over the"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseDockerfile([]byte(tt.src))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want a *ParseError", err)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "packaging: ") {
				t.Errorf("err = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParseDockerfileAtSizeLimit(t *testing.T) {
	// Comment lines of 1000 bytes: BuildKit refuses a single line over
	// 64 KiB on its own.
	var sb strings.Builder
	sb.WriteString("FROM scratch\n")
	for sb.Len() < MaxDockerfileSize-1000 {
		sb.WriteString("#" + strings.Repeat("x", 998) + "\n")
	}
	sb.WriteString("#" + strings.Repeat("x", MaxDockerfileSize-sb.Len()-1))
	src := sb.String()
	if len(src) != MaxDockerfileSize {
		t.Fatalf("test input is %d bytes", len(src))
	}
	if _, err := ParseDockerfile([]byte(src)); err != nil {
		t.Errorf("a Dockerfile of exactly MaxDockerfileSize bytes: %v", err)
	}
	if _, err := ParseDockerfile([]byte(src + "x")); err == nil || !strings.Contains(err.Error(), "over the") {
		t.Errorf("a Dockerfile one byte over MaxDockerfileSize: %v, want the size limit", err)
	}
}

func TestSplitWords(t *testing.T) {
	env := []string{"VERSION=v1.4.2", "EMPTY="}
	tests := []struct {
		name    string
		in      string
		want    []string
		wantErr string
	}{
		{name: "plain", in: "go build -o x ./cmd", want: []string{"go", "build", "-o", "x", "./cmd"}},
		{name: "double quotes", in: `-ldflags="-s -w -buildid="`, want: []string{"-ldflags=-s -w -buildid="}},
		{name: "single quotes", in: `-ldflags='-s -w'`, want: []string{"-ldflags=-s -w"}},
		{name: "escapes", in: `a\ b "c\"d"`, want: []string{"a b", `c"d`}},
		{name: "variable", in: `-X "v=${VERSION}" $VERSION`, want: []string{"-X", "v=v1.4.2", "v1.4.2"}},
		{name: "empty variable", in: `-X v=${EMPTY}`, want: []string{"-X", "v="}},
		{name: "no expansion in single quotes", in: `'${VERSION}'`, want: []string{"${VERSION}"}},
		{name: "unset variable", in: "go build $FLAGS", wantErr: "$FLAGS, which no ARG or ENV"},
		{name: "and", in: "go build && true", wantErr: "needs a shell"},
		{name: "command substitution", in: "go build `x`", wantErr: "needs a shell"},
		{name: "dollar substitution", in: "go build $(x)", wantErr: "needs a shell"},
		{name: "glob", in: "go build ./cmd/*", wantErr: "needs a shell"},
		{name: "unterminated", in: `go "build`, wantErr: "unexpected end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SplitWords(tt.in, env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestDockerfileRootfs(t *testing.T) {
	r, err := enclaveDockerfile(t).Rootfs()
	if err != nil {
		t.Fatal(err)
	}
	zero := int64(0)
	want := &Rootfs{Dir: "/rootfs", Line: r.Line, Entries: []*RootfsEntry{
		{Path: "/etc", Dir: true, Mode: 0o755, MTime: &zero},
		{Path: "/etc/kmsproxy", Dir: true, Mode: 0o755, MTime: &zero},
		{Path: "/kmsproxyd", Source: "/out/kmsproxyd", Mode: 0o555, MTime: &zero},
		{Path: "/etc/kmsproxy/policy.yaml", Source: "/out/policy.yaml", Mode: 0o444, MTime: &zero},
	}}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestDockerfileRootfsErrors(t *testing.T) {
	orig := string(readRepoFile(t, "Dockerfile.enclave"))
	const mkdir = "RUN mkdir -p /rootfs/etc/kmsproxy \\\n"
	if !strings.Contains(orig, mkdir) {
		t.Fatalf("Dockerfile.enclave no longer contains %q", mkdir)
	}
	tests := []struct {
		name, old, new, want string
	}{
		{"cp with options", "cp /out/kmsproxyd", "cp -a /out/kmsproxyd", "want cp FILE DEST"},
		{"setuid", "chmod 0555 /rootfs/kmsproxyd", "chmod 4755 /rootfs/kmsproxyd", "no setuid"},
		{"directory not made", mkdir, "RUN mkdir -p /rootfs/etc \\\n", "was not made with mkdir -p"},
		{"touch follows links", "touch -h -d @0", "touch -d @0", "want touch -h -d @SECONDS"},
		{"outside the tree", "chmod 0755 /rootfs/etc /rootfs/etc/kmsproxy", "chmod 0755 /rootfs/etc /etc", "/etc is outside /rootfs"},
		{"pipe", mkdir, "RUN mkdir -p /rootfs/etc/kmsproxy | true \\\n", "needs a shell"},
		{"nothing copied to /", "COPY --from=build /rootfs/ /", "COPY --from=build /rootfs/ /opt/", "does not copy a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := mutate(t, orig, tt.old, tt.new).Rootfs()
			var pe *ParseError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Rootfs() = %v, want a *ParseError containing %q", err, tt.want)
			}
		})
	}
}

// mutate replaces the first old in the Dockerfile source orig with new and
// parses the result; it fails t when that changes nothing.
func mutate(t *testing.T, orig, old, new string) *Dockerfile {
	t.Helper()
	src := strings.Replace(orig, old, new, 1)
	if src == orig {
		t.Fatal("the mutation changed nothing")
	}
	df, err := ParseDockerfile([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return df
}
