package packaging

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// RootfsEntry is one file or directory of the final image.
type RootfsEntry struct {
	Path   string      // in the final image, e.g. /etc/kmsproxy/policy.yaml
	Dir    bool        // a directory
	Source string      // for a file: the builder path it is copied from
	Mode   os.FileMode // permission bits set by chmod; 0 if never set
	MTime  *int64      // Unix time set by touch; nil if never set
}

// Rootfs is the final image's file system as the Dockerfile builds it: the
// builder assembles a directory (Dir) with mkdir, cp, chmod and touch, and
// the final stage copies it to / with COPY --from. Entries are in the order
// they are created.
type Rootfs struct {
	Dir     string // in the builder, e.g. /rootfs
	Line    int    // the final stage's COPY
	Entries []*RootfsEntry
}

// Entry returns the entry at an image path, or nil.
func (r *Rootfs) Entry(p string) *RootfsEntry {
	for _, e := range r.Entries {
		if e.Path == p {
			return e
		}
	}
	return nil
}

// Rootfs reads how the final image's file system is built. The final stage
// must copy exactly one builder directory to /, and every builder RUN that
// touches that directory must be a chain of plain commands joined by &&,
// each one of: mkdir -p DIR..., cp FILE DEST, chmod MODE PATH...,
// touch -h -d @SECONDS PATH... Anything else is an error: these are the
// commands whose effect on the image this function can state exactly.
func (df *Dockerfile) Rootfs() (*Rootfs, error) {
	b, err := df.KmsproxydBuild(nil)
	if err != nil {
		return nil, err
	}
	final := df.Final()
	var r *Rootfs
	for _, c := range final.Commands {
		cp, ok := c.(*instructions.CopyCommand)
		if !ok {
			continue
		}
		if cp.From == b.Stage && len(cp.SourcePaths) == 1 && path.Clean(cp.DestPath) == "/" && strings.HasSuffix(cp.SourcePaths[0], "/") {
			if r != nil {
				return nil, &ParseError{Line: Line(cp), Msg: "the final stage copies more than one builder directory to /"}
			}
			r = &Rootfs{Dir: path.Clean(cp.SourcePaths[0]), Line: Line(cp)}
		}
	}
	if r == nil {
		return nil, &ParseError{Line: final.Line, Msg: fmt.Sprintf("the final stage does not copy a directory of the %q stage to / (COPY --from=%s /rootfs/ /)", b.Stage, b.Stage)}
	}
	if r.Dir == "/" || !path.IsAbs(r.Dir) {
		return nil, &ParseError{Line: r.Line, Msg: "the copied builder directory must be an absolute path other than /"}
	}
	st := df.Stage(b.Stage)
	for _, c := range st.Commands {
		run, ok := c.(*instructions.RunCommand)
		if !ok || !strings.Contains(strings.Join(run.CmdLine, " "), r.Dir) {
			continue
		}
		cmd, ok := shellCommand(run)
		if !ok {
			return nil, &ParseError{Line: Line(run), Msg: "assembling " + r.Dir + ": want a shell-form RUN without heredocs"}
		}
		for _, part := range strings.Split(cmd, "&&") {
			words, err := SplitWords(part, nil)
			if err != nil {
				return nil, &ParseError{Line: Line(run), Msg: "assembling " + r.Dir + ": " + err.Error()}
			}
			if err := r.apply(words); err != nil {
				return nil, &ParseError{Line: Line(run), Msg: "assembling " + r.Dir + ": " + err.Error()}
			}
		}
	}
	if len(r.Entries) == 0 {
		return nil, &ParseError{Line: r.Line, Msg: "no builder RUN puts anything into " + r.Dir}
	}
	return r, nil
}

// imagePath maps a builder path under r.Dir to the final image's path.
func (r *Rootfs) imagePath(p string) (string, error) {
	p = path.Clean(p)
	rel, ok := strings.CutPrefix(p, r.Dir+"/")
	if !ok {
		return "", fmt.Errorf("%s is outside %s", p, r.Dir)
	}
	return "/" + rel, nil
}

func (r *Rootfs) apply(words []string) error {
	if len(words) == 0 {
		return errors.New("empty command")
	}
	cmd, args := words[0], words[1:]
	switch cmd {
	case "mkdir":
		if len(args) < 2 || args[0] != "-p" {
			return errors.New("want mkdir -p DIR [DIR ...]")
		}
		for _, a := range args[1:] {
			p, err := r.imagePath(a)
			if err != nil {
				return err
			}
			// mkdir -p creates every missing parent.
			var chain []string
			for q := p; q != "/"; q = path.Dir(q) {
				chain = append(chain, q)
			}
			slices.Reverse(chain)
			for _, q := range chain {
				if e := r.Entry(q); e == nil {
					r.Entries = append(r.Entries, &RootfsEntry{Path: q, Dir: true})
				} else if !e.Dir {
					return fmt.Errorf("mkdir %s: a file is there", q)
				}
			}
		}
	case "cp":
		if len(args) != 2 || strings.HasPrefix(args[0], "-") {
			return errors.New("want cp FILE DEST (one file, no options)")
		}
		p, err := r.imagePath(args[1])
		if err != nil {
			return err
		}
		if parent := path.Dir(p); parent != "/" {
			if e := r.Entry(parent); e == nil || !e.Dir {
				return fmt.Errorf("cp to %s: its directory was not made with mkdir -p", p)
			}
		}
		if r.Entry(p) != nil {
			return fmt.Errorf("cp to %s: already there", p)
		}
		r.Entries = append(r.Entries, &RootfsEntry{Path: p, Source: path.Clean(args[0])})
	case "chmod":
		if len(args) < 2 {
			return errors.New("want chmod MODE PATH [PATH ...]")
		}
		mode, err := strconv.ParseUint(args[0], 8, 32)
		if err != nil || mode > 0o777 {
			return fmt.Errorf("chmod %s: want an octal mode such as 0444 (no setuid, setgid or sticky bits)", args[0])
		}
		for _, a := range args[1:] {
			e, err := r.entryAt(a)
			if err != nil {
				return err
			}
			e.Mode = os.FileMode(mode)
		}
	case "touch":
		var (
			stamp   *int64
			noDeref bool
			paths   []string
		)
		for i := 0; i < len(args); i++ {
			switch a := args[i]; {
			case a == "-h":
				noDeref = true
			case a == "-d" && i+1 < len(args) && strings.HasPrefix(args[i+1], "@"):
				n, err := strconv.ParseInt(args[i+1][1:], 10, 64)
				if err != nil {
					return fmt.Errorf("touch -d %s: want @SECONDS", args[i+1])
				}
				stamp = &n
				i++
			case strings.HasPrefix(a, "-"):
				return fmt.Errorf("touch %s: want touch -h -d @SECONDS PATH [PATH ...]", a)
			default:
				paths = append(paths, a)
			}
		}
		if stamp == nil || !noDeref || len(paths) == 0 {
			return errors.New("want touch -h -d @SECONDS PATH [PATH ...]")
		}
		for _, a := range paths {
			e, err := r.entryAt(a)
			if err != nil {
				return err
			}
			e.MTime = stamp
		}
		return nil
	default:
		return fmt.Errorf("%s: only mkdir -p, cp, chmod and touch -h -d @SECONDS may build the image's file system", cmd)
	}
	// mkdir and cp change the mtime of what they create and of the directory
	// they add it to (this resets every ancestor, which is stricter): a touch
	// must come after them. chmod changes no mtime.
	if cmd != "chmod" {
		for _, a := range args {
			p, err := r.imagePath(a)
			if err != nil {
				continue // cp's source, in the builder
			}
			for q := p; q != "/"; q = path.Dir(q) {
				if e := r.Entry(q); e != nil {
					e.MTime = nil
				}
			}
		}
	}
	return nil
}

func (r *Rootfs) entryAt(builderPath string) (*RootfsEntry, error) {
	p, err := r.imagePath(builderPath)
	if err != nil {
		return nil, err
	}
	e := r.Entry(p)
	if e == nil {
		return nil, fmt.Errorf("%s does not exist at that point", builderPath)
	}
	return e, nil
}

// Materialize builds the file system in dir on this machine, the way the
// builder's commands do, with the contents of each file's builder source
// from sources. Used to stand in for the builder stage where it cannot run.
func (r *Rootfs) Materialize(dir string, sources map[string][]byte) error {
	for _, e := range r.Entries {
		p := filepath.Join(dir, filepath.FromSlash(e.Path))
		if e.Dir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			continue
		}
		data, ok := sources[e.Source]
		if !ok {
			return fmt.Errorf("packaging: no contents for %s (copied from %s)", e.Path, e.Source)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return err
		}
	}
	// Modes, then times, children before parents: setting a child's time
	// does not change its parent's, but creating it did.
	for i := len(r.Entries) - 1; i >= 0; i-- {
		e := r.Entries[i]
		p := filepath.Join(dir, filepath.FromSlash(e.Path))
		if e.Mode != 0 {
			if err := os.Chmod(p, e.Mode); err != nil {
				return err
			}
		}
		if e.MTime != nil {
			t := time.Unix(*e.MTime, 0)
			if err := os.Chtimes(p, t, t); err != nil {
				return err
			}
		}
	}
	return nil
}
