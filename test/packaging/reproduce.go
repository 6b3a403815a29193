package packaging

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"golang.org/x/sync/errgroup"
)

// ReproduceConfig says what Reproduce builds and where.
type ReproduceConfig struct {
	Root       string            // module root, which is also the docker build context
	Dockerfile string            // default: Root/Dockerfile.enclave
	WorkDir    string            // where the two build directories are made; default: os.TempDir()
	GOARCH     string            // default: the go command's own GOARCH (docker builds for the host's platform)
	BuildArgs  map[string]string // docker build --build-arg values, e.g. VERSION, CGO_ENABLED
	Go         string            // the go command; default "go" from PATH
	Out        string            // when set, the binary is written there (mode 0755)
	Log        io.Writer         // progress lines; nil discards them
}

// Reproduction is the result of two identical builds.
type Reproduction struct {
	Command          string    // the Dockerfile's go build line
	Env              []string  // the build variables both builds ran with (from the Dockerfile, plus GOOS/GOARCH)
	GoVersion        string    // the local toolchain, e.g. go1.26.8
	BuilderGoVersion string    // the Go release of the Dockerfile's builder image, e.g. 1.26.8
	Libcrypto        string    // the libssl-dev version the Dockerfile pins; "" for a pure Go build
	LocalLibcrypto   string    // the libssl-dev version installed here ("" if unknown)
	Backend          string    // the RSA backend linked into the binary: "openssl" or "go"
	Dirs             [2]string // where the two builds ran (removed afterwards)
	SHA256           [2]string // hex SHA-256 of each build's binary (equal)
	Size             int64
	Binary           []byte // the binary itself
}

// NotReproducibleError reports two builds whose binaries differ.
type NotReproducibleError struct {
	SHA256    [2]string
	Size      [2]int64
	FirstDiff int64 // offset of the first differing byte
}

func (e *NotReproducibleError) Error() string {
	return fmt.Sprintf("packaging: kmsproxyd is not reproducible: build 1 is %d bytes with SHA-256 %s, build 2 is %d bytes with SHA-256 %s; they first differ at byte %d",
		e.Size[0], e.SHA256[0], e.Size[1], e.SHA256[1], e.FirstDiff)
}

// passedGoEnv are the go command settings the builds take from the local go
// environment: where modules come from and are cached. GOMODCACHE is shared
// on purpose (modules are content-addressed and verified against go.sum);
// the build cache, temporary directory, GOPATH and HOME are not.
var passedGoEnv = []string{"GOMODCACHE", "GOPROXY", "GOSUMDB", "GONOSUMDB", "GONOPROXY", "GOPRIVATE", "GOINSECURE", "GOVCS"}

// Reproduce replays the kmsproxyd build of the Dockerfile twice, each in its
// own fresh directory under a different path, and fails unless both binaries
// are byte-identical. Each build directory receives exactly what the builder
// stage COPYs from the build context (so a package the Dockerfile forgets to
// copy fails here too), and the go build line runs verbatim, with the
// Dockerfile's environment, its own GOCACHE, GOTMPDIR, GOPATH and HOME, GOENV=off
// and GOWORK=off; only the module cache is shared. The builder's other RUN
// steps (go mod download, chmod, touch) do not change the binary's bytes and
// are not replayed. The Dockerfile must also pass Check, and the binary
// CheckBinary.
//
// The two builds run at the same time; on two cores this takes about as long
// as one cold build of kmsproxyd (a minute or two).
func Reproduce(ctx context.Context, cfg ReproduceConfig) (*Reproduction, error) {
	if cfg.Root == "" {
		return nil, errors.New("packaging: Reproduce needs the module root")
	}
	if cfg.Dockerfile == "" {
		cfg.Dockerfile = filepath.Join(cfg.Root, "Dockerfile.enclave")
	}
	if cfg.Go == "" {
		cfg.Go = "go"
	}
	var logMu sync.Mutex // the two builds log from their own goroutines
	logf := func(format string, args ...any) {
		if cfg.Log != nil {
			logMu.Lock()
			defer logMu.Unlock()
			fmt.Fprintf(cfg.Log, format+"\n", args...)
		}
	}

	src, err := readLimited(cfg.Dockerfile, MaxDockerfileSize)
	if err != nil {
		return nil, err
	}
	df, err := ParseDockerfile(src)
	if err != nil {
		return nil, err
	}
	if vs := Check(df, cfg.BuildArgs); len(vs) > 0 {
		var lines []string
		for _, v := range vs {
			lines = append(lines, v.String())
		}
		return nil, fmt.Errorf("packaging: %s breaks the enclave build's rules:\n  %s", cfg.Dockerfile, strings.Join(lines, "\n  "))
	}
	b, err := df.KmsproxydBuild(cfg.BuildArgs)
	if err != nil {
		return nil, err
	}
	cgo, _ := b.Getenv("CGO_ENABLED")

	goEnv, err := hostGoEnv(ctx, cfg.Go)
	if err != nil {
		return nil, err
	}
	goarch := cfg.GOARCH
	if goarch == "" {
		goarch = goEnv["GOARCH"]
	}
	rep := &Reproduction{Command: b.Command(), GoVersion: goEnv["GOVERSION"]}
	rep.BuilderGoVersion, _ = df.BuilderGoVersion()
	// The Dockerfile's variables: the stage's ENV and ARG, then the RUN
	// line's own.
	rep.Env = append(append([]string{"GOOS=linux", "GOARCH=" + goarch}, b.StageEnv...), b.Env...)
	if cgo == "1" {
		rep.Libcrypto = df.Libcrypto()
		local, err := localPackageVersion(ctx, LibcryptoPackage)
		if err != nil {
			return rep, fmt.Errorf("packaging: the Dockerfile builds kmsproxyd with OpenSSL (CGO_ENABLED=1), which needs %s here: %w;"+
				" install it (apt-get install %s=%s) or replay the pure Go build (CGO_ENABLED=0 as a build argument)",
				LibcryptoPackage, err, LibcryptoPackage, rep.Libcrypto)
		}
		rep.LocalLibcrypto = local
	}

	work, err := os.MkdirTemp(cfg.WorkDir, "kmsproxy-reproducible-")
	if err != nil {
		return nil, fmt.Errorf("failed to create the work directory: %w", err)
	}
	defer os.RemoveAll(work)
	// Different names and lengths: with -trimpath the path must not matter.
	rep.Dirs = [2]string{filepath.Join(work, "a"), filepath.Join(work, "second-build-in-a-longer-path")}

	var bins [2][]byte
	g, gctx := errgroup.WithContext(ctx)
	for i, dir := range rep.Dirs {
		g.Go(func() error {
			bin, err := buildOnce(gctx, cfg, df, b, goEnv, rep.Env, dir)
			if err != nil {
				return fmt.Errorf("build %d in %s: %w", i+1, dir, err)
			}
			bins[i] = bin
			logf("build %d in %s: %d bytes", i+1, dir, len(bin))
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for i, bin := range bins {
		sum := sha256.Sum256(bin)
		rep.SHA256[i] = hex.EncodeToString(sum[:])
	}
	if !bytes.Equal(bins[0], bins[1]) {
		e := &NotReproducibleError{SHA256: rep.SHA256, Size: [2]int64{int64(len(bins[0])), int64(len(bins[1]))}}
		for e.FirstDiff < int64(min(len(bins[0]), len(bins[1]))) && bins[0][e.FirstDiff] == bins[1][e.FirstDiff] {
			e.FirstDiff++
		}
		return rep, e
	}
	rep.Size = int64(len(bins[0]))
	rep.Binary = bins[0]
	if err := CheckBinary(rep.Binary); err != nil {
		return rep, err
	}
	rep.Backend = BinaryBackend(rep.Binary)
	if want := map[string]string{"1": "openssl", "0": "go"}[cgo]; rep.Backend != want {
		return rep, fmt.Errorf("packaging: the binary built with CGO_ENABLED=%s decrypts with the %s backend, want %s", cgo, rep.Backend, want)
	}
	if cfg.Out != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.Out), 0o755); err != nil {
			return rep, fmt.Errorf("failed to create the output directory: %w", err)
		}
		if err := os.WriteFile(cfg.Out, rep.Binary, 0o755); err != nil {
			return rep, fmt.Errorf("failed to write %s: %w", cfg.Out, err)
		}
	}
	return rep, nil
}

// buildOnce lays out the builder stage's context copies under dir/fs (the
// container's root) and runs the go build line there.
func buildOnce(ctx context.Context, cfg ReproduceConfig, df *Dockerfile, b *GoBuild, goEnv map[string]string, buildEnv []string, dir string) ([]byte, error) {
	root := filepath.Join(dir, "fs")
	st := df.Stage(b.Stage)
	runDir := "/"
	for i, c := range st.Commands {
		if Line(c) == b.Line {
			runDir = st.Workdir(i)
			break
		}
		cp, ok := c.(*instructions.CopyCommand)
		if !ok || cp.From != "" {
			continue
		}
		if err := copyFromContext(cfg.Root, root, st.Workdir(i), copyOf(cp)); err != nil {
			return nil, err
		}
	}
	var dirs = map[string]string{}
	for _, name := range []string{"cache", "tmp", "gopath", "home"} {
		dirs[name] = filepath.Join(dir, name)
		if err := os.MkdirAll(dirs[name], 0o755); err != nil {
			return nil, err
		}
	}
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dirs["home"],
		"GOPATH=" + dirs["gopath"],
		"GOCACHE=" + dirs["cache"],
		"GOTMPDIR=" + dirs["tmp"],
		"TMPDIR=" + dirs["tmp"],
		"GOENV=off",
		"GOWORK=off",
		"GOTOOLCHAIN=local",
		"GOFLAGS=",
	}
	for _, name := range passedGoEnv {
		if v := goEnv[name]; v != "" {
			env = append(env, name+"="+v)
		}
	}
	env = append(env, buildEnv...) // the Dockerfile's own settings come last and win
	out := filepath.Join(root, filepath.FromSlash(b.Output))
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return nil, err
	}
	args := append([]string{"build"}, b.Flags...)
	args = append(args, "-o", out, b.Package)
	cmd := exec.CommandContext(ctx, cfg.Go, args...)
	cmd.Dir = filepath.Join(root, filepath.FromSlash(runDir))
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return os.ReadFile(out)
}

// copyFromContext does what docker's COPY does for plain paths: a directory
// source copies its contents into the destination directory, a file goes
// into a destination ending in "/" or to the destination path itself.
func copyFromContext(context, root, workdir string, c Copy) error {
	for _, src := range c.Sources {
		clean := path.Clean(src)
		if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") || strings.ContainsAny(src, "*?[") {
			return fmt.Errorf("line %d: COPY %s: only plain paths inside the build context are supported", c.Line, src)
		}
		from := filepath.Join(context, filepath.FromSlash(clean))
		info, err := os.Lstat(from)
		if err != nil {
			return fmt.Errorf("line %d: COPY %s: %w", c.Line, src, err)
		}
		if info.IsDir() {
			dest := c.Dest
			if !path.IsAbs(dest) {
				dest = path.Join(workdir, dest)
			}
			if err := copyTree(from, filepath.Join(root, filepath.FromSlash(dest))); err != nil {
				return fmt.Errorf("line %d: COPY %s: %w", c.Line, src, err)
			}
			continue
		}
		if len(c.Sources) > 1 && !strings.HasSuffix(c.Dest, "/") {
			return fmt.Errorf("line %d: COPY with several sources needs a destination ending in /", c.Line)
		}
		dest := resolveDest(workdir, c.Dest, path.Base(clean))
		if err := copyFile(from, filepath.Join(root, filepath.FromSlash(dest)), info); err != nil {
			return fmt.Errorf("line %d: COPY %s: %w", c.Line, src, err)
		}
	}
	return nil
}

func copyTree(from, to string) error {
	return filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, p)
		if err != nil {
			return err
		}
		target := filepath.Join(to, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case info.Mode().IsRegular():
			return copyFile(p, target, info)
		default:
			return fmt.Errorf("%s is neither a file, a directory nor a symbolic link", p)
		}
	})
}

func copyFile(from, to string, info fs.FileInfo) error {
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, info.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func hostGoEnv(ctx context.Context, goCmd string) (map[string]string, error) {
	args := append([]string{"env", "-json", "GOARCH", "GOVERSION"}, passedGoEnv...)
	out, err := exec.CommandContext(ctx, goCmd, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("failed to run go env: %w: %s", err, bytes.TrimSpace(ee.Stderr))
		}
		return nil, fmt.Errorf("failed to run go env: %w", err)
	}
	m := map[string]string{}
	if err := json.Unmarshal(out, &m); err != nil {
		return nil, fmt.Errorf("failed to read go env -json: %w", err)
	}
	return m, nil
}

func readLimited(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("packaging: %s is over %d bytes", name, limit)
	}
	return data, nil
}

// The packages whose presence or absence CheckBinary looks for. Package paths
// stay in a stripped Go binary: -s drops the ELF symbol table, not the
// runtime's function table, which names every function with its package.
const (
	modulePath       = "github.com/enclavekit/kmsproxy"
	kmsproxydPath    = modulePath + "/cmd/kmsproxyd"
	presentPackage   = modulePath + "/internal/proxy."
	simulatorPackage = modulePath + "/internal/nsmsim."
	devkmsPackage    = modulePath + "/internal/devkms."
)

// cmsOpenSSLFunc is a function only the OpenSSL backend of internal/cms
// has: its name stays in a stripped binary's function table.
const cmsOpenSSLFunc = modulePath + "/internal/cms._Cfunc_kp_decrypt"

// BinaryBackend returns the RSA backend linked into a kmsproxyd binary:
// "openssl" or "go".
func BinaryBackend(bin []byte) string {
	if bytes.Contains(bin, []byte(cmsOpenSSLFunc)) {
		return "openssl"
	}
	return "go"
}

// CheckBinary checks a kmsproxyd binary built for the enclave: the build
// settings Go records in it (-trimpath, no build tags but the OpenSSL
// build's, no VCS stamp, cgo only for the OpenSSL backend), fully static (no
// ELF interpreter, no shared library: FROM scratch has none), no ELF symbol
// table, DWARF or Go build ID, and neither the NSM simulator nor devkms
// linked in.
func CheckBinary(bin []byte) error {
	var problems []string
	bi, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("packaging: failed to read the binary's build information: %w", err)
	}
	if bi.Path != kmsproxydPath {
		problems = append(problems, fmt.Sprintf("main package %s, want %s", bi.Path, kmsproxydPath))
	}
	settings := map[string]string{}
	var tags []string
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
		switch {
		case s.Key == "-tags":
			tags = strings.Split(s.Value, ",")
			for _, tag := range tags {
				if !slices.Contains(OpenSSLTags, tag) {
					problems = append(problems, "built with -tags "+tag+" (want only "+strings.Join(OpenSSLTags, ",")+")")
				}
			}
		case strings.HasPrefix(s.Key, "vcs"):
			problems = append(problems, "stamped with "+s.Key+" (want -buildvcs=false)")
		case s.Key == "-race" || s.Key == "-msan" || s.Key == "-asan" || s.Key == "-cover":
			problems = append(problems, "built with "+s.Key)
		}
	}
	switch settings["CGO_ENABLED"] {
	case "0":
	case "1":
		if !slices.Contains(tags, "openssl") {
			problems = append(problems, "CGO_ENABLED=1 without -tags openssl: cgo is only for the OpenSSL backend")
		}
	default:
		problems = append(problems, "CGO_ENABLED="+settings["CGO_ENABLED"]+", want 1 (OpenSSL) or 0 (pure Go)")
	}
	if settings["-trimpath"] != "true" {
		problems = append(problems, "not built with -trimpath")
	}
	if settings["GOOS"] != "linux" {
		problems = append(problems, "GOOS="+settings["GOOS"]+", want linux")
	}

	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return fmt.Errorf("packaging: failed to read the binary as ELF: %w", err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			problems = append(problems, "dynamically linked (it names an ELF interpreter; want -ldflags=-extldflags=-static)")
			break
		}
	}
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		problems = append(problems, "needs the shared libraries "+strings.Join(libs, ", ")+" (FROM scratch has none)")
	}
	for _, s := range f.Sections {
		switch {
		case s.Name == ".symtab":
			problems = append(problems, "has an ELF symbol table (want -ldflags=-s)")
		case strings.HasPrefix(s.Name, ".debug_") || strings.HasPrefix(s.Name, ".zdebug_"):
			problems = append(problems, "has DWARF section "+s.Name+" (want -ldflags=-w)")
		case s.Name == ".note.go.buildid":
			if data, err := s.Data(); err == nil && len(data) > 16 {
				problems = append(problems, "has a Go build ID note (want -ldflags=-buildid=)")
			}
		}
	}

	if !bytes.Contains(bin, []byte(presentPackage)) {
		problems = append(problems, "does not name "+strings.TrimSuffix(presentPackage, ".")+": cannot tell which packages it holds")
	}
	for _, p := range []string{simulatorPackage, devkmsPackage} {
		if bytes.Contains(bin, []byte(p)) {
			problems = append(problems, "contains "+strings.TrimSuffix(p, ".")+", which must never run in an enclave")
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("packaging: the kmsproxyd binary is not fit for the enclave: %s", strings.Join(problems, "; "))
	}
	return nil
}

// localPackageVersion is the version of a Debian package installed here.
func localPackageVersion(ctx context.Context, name string) (string, error) {
	out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f", "${Status}\t${Version}", name).Output()
	if err != nil {
		return "", fmt.Errorf("%s is not installed (dpkg-query -W %s: %v)", name, name, err)
	}
	status, version, _ := strings.Cut(string(out), "\t")
	if !strings.HasSuffix(status, " installed") || version == "" {
		return "", fmt.Errorf("%s is not installed (dpkg status %q)", name, status)
	}
	return version, nil
}
