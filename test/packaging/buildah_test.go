package packaging

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/enclavekit/kmsproxy/test/internal/harness"
	"github.com/google/go-cmp/cmp"
)

// TestEnclaveImageBuildah builds Dockerfile.enclave's final stage with buildah
// and checks what the image holds.
//
// The builder stage cannot run here: it pulls golang:...@sha256 from Docker
// Hub and downloads modules, and this test runs offline (buildah bud
// --pull=never). So the test replaces only the builder: a stand-in stage of
// the same name, FROM scratch, holds the binary make reproducible's replay of
// the builder produced, at the builder's output path, with the mode and mtime
// the builder's chmod/touch give it. The final stage is Dockerfile.enclave's
// own text, unchanged. buildah runs as root with the vfs storage driver and
// chroot isolation, in storage of its own under the test's temporary
// directory.
func TestEnclaveImageBuildah(t *testing.T) {
	buildah := harness.RequireTool(t, "buildah")
	rep := sharedReproduction(t)

	src := readRepoFile(t, "Dockerfile.enclave")
	df, err := ParseDockerfile(src)
	if err != nil {
		t.Fatal(err)
	}
	b, err := df.KmsproxydBuild(nil)
	if err != nil {
		t.Fatal(err)
	}
	binOut, policyOut, err := df.BuilderOutputs()
	if err != nil || policyOut == "" {
		t.Fatalf("builder outputs: %q %q %v", binOut, policyOut, err)
	}
	rootfs, err := df.Rootfs()
	if err != nil {
		t.Fatal(err)
	}
	final := df.Final()
	lines := strings.Split(string(src), "\n")
	finalText := strings.Join(lines[final.Line-1:], "\n")

	// The builder's file system for the final image, made by replaying its
	// mkdir/cp/chmod/touch commands (Rootfs) on the reproducible binary and
	// the policy.
	work := t.TempDir()
	ctxDir := filepath.Join(work, "context")
	policy := readRepoFile(t, PolicySource)
	if err := rootfs.Materialize(filepath.Join(ctxDir, "rootfs"), map[string][]byte{binOut: rep.Binary, policyOut: policy}); err != nil {
		t.Fatal(err)
	}
	epoch := time.Unix(0, 0)
	containerfile := fmt.Sprintf(`# Stand-in for Dockerfile.enclave's builder stage (see TestEnclaveImageBuildah).
FROM scratch AS %s
COPY rootfs/ %s/

# Dockerfile.enclave's final stage, verbatim:
%s`, b.Stage, rootfs.Dir, finalText)
	cf := filepath.Join(work, "Containerfile")
	if err := os.WriteFile(cf, []byte(containerfile), 0o644); err != nil {
		t.Fatal(err)
	}

	storage := []string{
		"--root", filepath.Join(work, "storage"),
		"--runroot", filepath.Join(work, "run"),
		"--storage-driver", "vfs",
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(buildah, append(slices.Clone(storage), args...)...)
		cmd.Env = append(os.Environ(), "BUILDAH_ISOLATION=chroot", "TMPDIR="+work)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("buildah %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	const tag = "localhost/kmsproxyd-packaging-test:latest"
	out := run("bud", "--pull=never", "--isolation", "chroot", "--layers=false", "-f", cf, "-t", tag, ctxDir)
	t.Logf("buildah bud:\n%s", out)
	t.Cleanup(func() {
		cmd := exec.Command(buildah, append(slices.Clone(storage), "rmi", "--all", "--force")...)
		_ = cmd.Run()
	})
	layout := filepath.Join(work, "oci")
	run("push", tag, "oci:"+layout+":latest")

	img := readOCIImage(t, layout)
	if diff := cmp.Diff([]string{"/kmsproxyd", "--policy", "/etc/kmsproxy/policy.yaml"}, img.Config.Entrypoint); diff != "" {
		t.Errorf("Entrypoint (-want +got):\n%s", diff)
	}
	if len(img.Config.Cmd) != 0 {
		t.Errorf("Cmd = %q, want none", img.Config.Cmd)
	}
	for _, kv := range img.Config.Env {
		// buildah gives every image a default PATH; nothing else may be set.
		if !strings.HasPrefix(kv, "PATH=") {
			t.Errorf("image environment has %q", kv)
		}
	}

	var names []string
	for name := range img.Files {
		names = append(names, name)
	}
	slices.Sort(names)
	wantNames := []string{"etc/", "etc/kmsproxy/", "etc/kmsproxy/policy.yaml", "kmsproxyd"}
	if diff := cmp.Diff(wantNames, names); diff != "" {
		t.Fatalf("files in the image (-want +got):\n%s", diff)
	}
	bin, pol := img.Files["kmsproxyd"], img.Files["etc/kmsproxy/policy.yaml"]
	if !bytes.Equal(bin.Data, rep.Binary) {
		t.Errorf("/kmsproxyd in the image (%d bytes) is not the reproducible build (%d bytes)", len(bin.Data), len(rep.Binary))
	}
	if !bytes.Equal(pol.Data, policy) {
		t.Errorf("/etc/kmsproxy/policy.yaml in the image differs from %s", PolicySource)
	}
	for _, f := range []struct {
		name string
		mode int64
	}{{"kmsproxyd", 0o555}, {"etc/kmsproxy/policy.yaml", 0o444}, {"etc/", 0o755}, {"etc/kmsproxy/", 0o755}} {
		e := img.Files[f.name]
		if e.Mode&0o7777 != f.mode {
			t.Errorf("%s has mode %o, want %o", f.name, e.Mode&0o7777, f.mode)
		}
		if e.Uid != 0 || e.Gid != 0 {
			t.Errorf("%s is owned by %d:%d, want 0:0", f.name, e.Uid, e.Gid)
		}
		// COPY keeps the builder's fixed mtime: no build time reaches the layers.
		if !e.ModTime.Equal(epoch) {
			t.Errorf("%s has mtime %s, want the builder's fixed %s", f.name, e.ModTime.UTC(), epoch.UTC())
		}
	}
}

type ociEntry struct {
	Mode     int64
	Uid, Gid int
	ModTime  time.Time
	Data     []byte
}

type ociImage struct {
	Config struct {
		Entrypoint []string
		Cmd        []string
		Env        []string
	}
	Files map[string]ociEntry // every layer entry by path ("dir/" for directories), later layers win
}

// readOCIImage reads the one image of an OCI image layout directory.
func readOCIImage(t testing.TB, dir string) *ociImage {
	t.Helper()
	blob := func(digest string) []byte {
		t.Helper()
		alg, hex, ok := strings.Cut(digest, ":")
		if !ok || alg != "sha256" {
			t.Fatalf("unexpected digest %q", digest)
		}
		data, err := os.ReadFile(filepath.Join(dir, "blobs", alg, hex))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	type descriptor struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
	}
	var index struct{ Manifests []descriptor }
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v, %d manifests", err, len(index.Manifests))
	}
	var manifest struct {
		Config descriptor
		Layers []descriptor
	}
	if err := json.Unmarshal(blob(index.Manifests[0].Digest), &manifest); err != nil {
		t.Fatal(err)
	}
	img := &ociImage{Files: map[string]ociEntry{}}
	var config struct{ Config json.RawMessage }
	if err := json.Unmarshal(blob(manifest.Config.Digest), &config); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(config.Config, &img.Config); err != nil {
		t.Fatal(err)
	}
	for _, l := range manifest.Layers {
		var r io.Reader = bytes.NewReader(blob(l.Digest))
		if strings.HasSuffix(l.MediaType, "+gzip") || strings.HasSuffix(l.MediaType, ".gzip") {
			zr, err := gzip.NewReader(r)
			if err != nil {
				t.Fatal(err)
			}
			r = zr
		}
		tr := tar.NewReader(r)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
			if h.Typeflag == tar.TypeDir {
				name += "/"
			}
			e := ociEntry{Mode: h.Mode, Uid: h.Uid, Gid: h.Gid, ModTime: h.ModTime}
			if h.Typeflag == tar.TypeReg {
				if e.Data, err = io.ReadAll(tr); err != nil {
					t.Fatal(err)
				}
			} else if h.Typeflag != tar.TypeDir {
				t.Errorf("layer entry %s has type %q: want only files and directories", h.Name, h.Typeflag)
			}
			img.Files[name] = e
		}
	}
	return img
}
