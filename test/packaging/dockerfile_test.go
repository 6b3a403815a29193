package packaging

import (
	"errors"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/enclavekit/kmsproxy/test/internal/harness"
	"github.com/google/go-cmp/cmp"
)

func TestDockerfileEnclaveKeepsTheRules(t *testing.T) {
	df := enclaveDockerfile(t)
	if vs := Check(df); len(vs) > 0 {
		for _, v := range vs {
			t.Errorf("Dockerfile.enclave %s", v)
		}
	}

	b, err := df.KmsproxydBuild()
	if err != nil {
		t.Fatal(err)
	}
	// The exact build line make reproducible replays.
	wantWords := []string{"CGO_ENABLED=0", "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", "/out/kmsproxyd", "./cmd/kmsproxyd"}
	if diff := cmp.Diff(wantWords, b.Words); diff != "" {
		t.Errorf("kmsproxyd build line (-want +got):\n%s", diff)
	}

	final := df.Final()
	if final.Image != "scratch" {
		t.Errorf("final stage FROM %s, want scratch", final.Image)
	}
	var ep []string
	for _, in := range final.Instructions {
		if in.Cmd == "ENTRYPOINT" {
			ep, _ = in.ExecForm()
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
	b, err := df.KmsproxydBuild()
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
	const build = `RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags="-s -w -buildid=" -o /out/kmsproxyd ./cmd/kmsproxyd`
	const entry = `ENTRYPOINT ["/kmsproxyd", "--policy", "/etc/kmsproxy/policy.yaml"]`
	for _, s := range []string{digest, build, entry, "FROM scratch\n", "COPY internal/ internal/\n", "ENV GOTOOLCHAIN=local GOFLAGS=",
		" \\\n && cp /out/policy.yaml /rootfs/etc/kmsproxy/policy.yaml", " \\\n && chmod 0444 /rootfs/etc/kmsproxy/policy.yaml",
		" \\\n && touch -h -d @0 /rootfs/kmsproxyd /rootfs/etc/kmsproxy/policy.yaml /rootfs/etc/kmsproxy /rootfs/etc", "COPY --from=build /rootfs/ /\n"} {
		if !strings.Contains(orig, s) {
			t.Fatalf("Dockerfile.enclave no longer contains %q: update this test's mutations", s)
		}
	}
	tests := []struct {
		name     string
		old, new string
		want     string
	}{
		{"tag without digest", digest, "", RulePinned},
		{"other builder image", "golang:1.26.8-bookworm" + digest, "example.com/go:1.26" + digest, RuleBuilder},
		{"git clone", "COPY internal/ internal/\n", "RUN git clone https://example.com/kmsproxy /src\n", RuleNoFetch},
		{"ADD", "COPY internal/ internal/\n", "ADD internal/ internal/\n", RuleNoFetch},
		{"curl", "COPY internal/ internal/\n", "RUN curl -sSfo /src/x.tgz https://example.com/x.tgz\n", RuleNoFetch},
		{"cgo", "CGO_ENABLED=0 go build", "CGO_ENABLED=1 go build", RuleBuildFlags},
		{"no trimpath", build, strings.Replace(build, " -trimpath", "", 1), RuleBuildFlags},
		{"vcs stamp", build, strings.Replace(build, " -buildvcs=false", "", 1), RuleBuildFlags},
		{"not stripped", build, strings.Replace(build, `-ldflags="-s -w -buildid="`, `-ldflags="-buildid="`, 1), RuleBuildFlags},
		{"build id kept", build, strings.Replace(build, `-ldflags="-s -w -buildid="`, `-ldflags="-s -w"`, 1), RuleBuildFlags},
		{"race", build, strings.Replace(build, "go build", "go build -race", 1), RuleBuildFlags},
		{"GOFLAGS", "ENV GOTOOLCHAIN=local GOFLAGS=", "ENV GOTOOLCHAIN=local GOFLAGS=-tags=nsmsim", RuleBuildFlags},
		{"shell in build line", build, build + " && ls /out", RuleBuildFlags},
		{"no build", build, "RUN go vet ./...", RuleBuildFlags},
		{"simulator tag", build, strings.Replace(build, "go build", "go build -tags nsmsim", 1), RuleNoSimulator},
		{"other tag", build, strings.Replace(build, "go build", "go build -tags=netgo", 1), RuleNoSimulator},
		{"final from debian", "FROM scratch\n", "FROM debian:bookworm-slim" + digest + "\n", RuleFinalScratch},
		{"RUN in final", entry, `RUN ["/kmsproxyd", "-version"]` + "\n" + entry, RuleFinalRuns},
		{"ENV in final", entry, "ENV KMSPROXY_REGION=eu-west-1\n" + entry, RuleFinalRuns},
		{"extra file", entry, "COPY enclave/policy.example.yaml /etc/kmsproxy/example.yaml\n" + entry, RuleFinalFiles},
		{"policy not in rootfs", " \\\n && cp /out/policy.yaml /rootfs/etc/kmsproxy/policy.yaml", "", RuleFinalFiles},
		{"policy not chmodded", " \\\n && chmod 0444 /rootfs/etc/kmsproxy/policy.yaml", "", RuleFinalFiles},
		{"no fixed mtimes", " \\\n && touch -h -d @0 /rootfs/kmsproxyd /rootfs/etc/kmsproxy/policy.yaml /rootfs/etc/kmsproxy /rootfs/etc", "", RuleFinalFiles},
		{"directory mtime not fixed", "/rootfs/etc/kmsproxy /rootfs/etc\n", "/rootfs/etc/kmsproxy\n", RuleFinalFiles},
		{"extra file in rootfs", "/rootfs/etc/kmsproxy /rootfs/etc\n", "/rootfs/etc/kmsproxy /rootfs/etc && cp /out/kmsproxyd /rootfs/etc/extra && chmod 0555 /rootfs/etc/extra && touch -h -d @0 /rootfs/etc/extra /rootfs/etc\n", RuleFinalFiles},
		{"shell in rootfs", "/rootfs/etc/kmsproxy /rootfs/etc\n", "/rootfs/etc/kmsproxy /rootfs/etc && ln -s /bin/sh /rootfs/sh\n", RuleFinalFiles},
		{"rootfs not copied", "COPY --from=build /rootfs/ /\n", "COPY --from=build /out/kmsproxyd /kmsproxyd\n", RuleFinalFiles},
		{"shell-form entrypoint", entry, "ENTRYPOINT /kmsproxyd --policy /etc/kmsproxy/policy.yaml", RuleEntrypoint},
		{"entrypoint without policy", entry, `ENTRYPOINT ["/kmsproxyd"]`, RuleEntrypoint},
		{"entrypoint runs a shell", entry, `ENTRYPOINT ["/bin/sh", "-c", "/kmsproxyd --policy /etc/kmsproxy/policy.yaml"]`, RuleEntrypoint},
		{"two entrypoints", entry, entry + "\n" + entry, RuleEntrypoint},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vs := Check(mutate(t, orig, tt.old, tt.new))
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

func TestParseDockerfile(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want *Dockerfile
	}{
		{
			name: "stages, continuations and comments",
			src:  "# syntax=docker/dockerfile:1\nARG V=1\nFROM golang:1 AS build\nRUN a \\\n  # inside\n  b\nCOPY --from=x --chmod=0444 a /b\n\nfrom scratch\nENTRYPOINT [\"/b\"]\n",
			want: &Dockerfile{
				GlobalArgs: []Instruction{{Line: 2, Cmd: "ARG", Args: "V=1"}},
				Stages: []Stage{
					{Line: 3, Image: "golang:1", Name: "build", Instructions: []Instruction{
						{Line: 4, Cmd: "RUN", Args: "a    b"},
						{Line: 7, Cmd: "COPY", Flags: []string{"--from=x", "--chmod=0444"}, Args: "a /b"},
					}},
					{Line: 9, Image: "scratch", Instructions: []Instruction{{Line: 10, Cmd: "ENTRYPOINT", Args: `["/b"]`}}},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDockerfile([]byte(tt.src))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseDockerfileErrors(t *testing.T) {
	tests := []struct {
		name, src, want string
	}{
		{"empty", "# nothing\n", "no FROM"},
		{"instruction before FROM", "RUN true\nFROM scratch\n", "line 1: RUN before the first FROM"},
		{"dangling continuation", "FROM scratch\nCOPY a \\\n", "line 2: the last instruction ends with a line continuation"},
		{"heredoc", "FROM scratch\nRUN <<EOF\necho\nEOF\n", "heredocs"},
		{"escape directive", "# escape=`\nFROM scratch\n", "escape parser directive"},
		{"FROM with junk", "FROM a b c d\n", "want IMAGE [AS NAME]"},
		{"not an instruction", "FROM scratch\n=x\n", "cannot read"},
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
	head := "FROM scratch\n#"
	src := head + strings.Repeat("x", MaxDockerfileSize-len(head))
	if len(src) != MaxDockerfileSize {
		t.Fatalf("test input is %d bytes", len(src))
	}
	if _, err := ParseDockerfile([]byte(src)); err != nil {
		t.Errorf("a Dockerfile of exactly MaxDockerfileSize bytes: %v", err)
	}
	if _, err := ParseDockerfile([]byte(src + "x")); err == nil {
		t.Error("a Dockerfile one byte over MaxDockerfileSize was accepted")
	}
}

func TestSplitWords(t *testing.T) {
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
		{name: "empty quoted word", in: `GOFLAGS= ""`, want: []string{"GOFLAGS=", ""}},
		{name: "and", in: "go build && true", wantErr: "needs a shell"},
		{name: "variable", in: "go build $FLAGS", wantErr: "needs a shell"},
		{name: "variable in double quotes", in: `go build "-ldflags=$X"`, wantErr: "needs a shell"},
		{name: "command substitution", in: "go build `x`", wantErr: "needs a shell"},
		{name: "glob", in: "go build ./cmd/*", wantErr: "needs a shell"},
		{name: "unterminated", in: `go "build`, wantErr: "unterminated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SplitWords(tt.in)
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
