package proxy_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/internal/enclavetest"
	"github.com/enclavekit/kmsproxy/internal/nsmsim"
)

// These benchmarks run devkms, the NSM simulator, kmsproxyd's proxy core and
// the client in one process, so ns/op here is latency, not kmsproxyd's own
// CPU: the harness in test/bench measures that on separate processes and
// holds the targets (`make bench`). They report their ratios to t_floor,
// one RSA-2048 OAEP-SHA256 decryption with the RSA backend this test binary
// uses (cms.DefaultBackend: OpenSSL's with -tags openssl and cgo, crypto/rsa
// otherwise), measured in the same process:
//
//	go test -run '^$' -bench . ./internal/proxy
//	CGO_ENABLED=1 go test -tags openssl -run '^$' -bench . ./internal/proxy

// benchPlaintext is what the benchmarks decrypt: a 32-byte data key, the
// usual secret behind an envelope-encryption scheme.
var benchPlaintext = bytes.Repeat([]byte{0x5a}, 32)

var (
	floorOnce sync.Once
	floorNs   float64
	floorErr  error
)

// tFloor is the time of one RSA-2048 OAEP-SHA256 decryption with the
// default backend and a precomputed key, as kmsproxyd's recipient key is,
// measured once per process: the median of 5 batches of 100, in wall-clock
// time like the benchmarks it divides. (testing.Benchmark cannot run inside
// a benchmark: it would wait forever for the lock the running one holds.)
func tFloor(b *testing.B) float64 {
	b.Helper()
	floorOnce.Do(func() {
		key, ct, err := rsaFixture()
		if err != nil {
			floorErr = err
			return
		}
		var batches []time.Duration
		for range 5 {
			start := time.Now()
			for range 100 {
				if _, err := key.DecryptOAEP(ct); err != nil {
					floorErr = err
					return
				}
			}
			batches = append(batches, time.Since(start))
		}
		slices.Sort(batches)
		floorNs = float64(batches[len(batches)/2].Nanoseconds()) / 100
	})
	if floorErr != nil {
		b.Fatalf("failed to measure t_floor: %v", floorErr)
	}
	return floorNs
}

// rsaFixture is a precomputed RSA-2048 key (rsa.GenerateKey precomputes,
// as for recipient.Manager's keys) handed to the default backend, and a
// 32-byte key encrypted to it.
func rsaFixture() (*cms.Key, []byte, error) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &priv.PublicKey, make([]byte, 32), nil)
	if err != nil {
		return nil, nil, err
	}
	key, err := cms.NewKey(priv)
	return key, ct, err
}

// BenchmarkRSADecrypt is the bare RSA-2048 OAEP-SHA256 decryption of a
// 32-byte content-encryption key with the default backend, the one
// expensive step of every attested request (t_floor, in wall-clock time).
func BenchmarkRSADecrypt(b *testing.B) {
	key, ct, err := rsaFixture()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		cek, err := key.DecryptOAEP(ct)
		if err != nil || len(cek) != 32 {
			b.Fatal(err)
		}
	}
}

// benchEnv is an in-process enclave flow with a ciphertext to decrypt and,
// for direct calls to devkms, a Recipient of the benchmark's own.
type benchEnv struct {
	e         *enclavetest.Env
	proxy     *kms.Client // to kmsproxyd's parent listener
	direct    *kms.Client // to devkms, signing as the enclave role
	blob      []byte
	recipient *types.RecipientInfo
}

func newBenchEnv(b testing.TB) *benchEnv {
	b.Helper()
	// Info is kmsproxyd's default level: every request logs one line,
	// which is part of its cost.
	e := enclavetest.Start(b, enclavetest.Options{LogLevel: slog.LevelInfo})
	be := &benchEnv{e: e, proxy: e.Client(b, e.ParentAddr), direct: e.Role(b)}
	be.blob = encryptAsOperator(b, e, benchPlaintext, nil)

	// The direct call carries a Recipient exactly like kmsproxyd's: an
	// RSA-2048 key in a document from the same simulator CA and PCRs.
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		b.Fatal(err)
	}
	sim, err := nsmsim.New(e.CA, nsmsim.Options{PCRs: e.PCRs})
	if err != nil {
		b.Fatal(err)
	}
	doc, err := sim.Attest(ctx, attestation.Request{PublicKey: spki})
	if err != nil {
		b.Fatal(err)
	}
	be.recipient = &types.RecipientInfo{AttestationDocument: doc, KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256}

	// Warm up both paths: connections, TLS sessions, devkms's
	// verification cache for both documents.
	for range 3 {
		if err := be.viaProxy(); err != nil {
			b.Fatal(err)
		}
		if err := be.viaDevKMS(); err != nil {
			b.Fatal(err)
		}
	}
	return be
}

// viaProxy is one Decrypt through kmsproxyd, checked.
func (be *benchEnv) viaProxy() error {
	out, err := be.proxy.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: be.blob})
	if err != nil {
		return fmt.Errorf("failed to decrypt through kmsproxyd: %w", err)
	}
	if !bytes.Equal(out.Plaintext, benchPlaintext) {
		return errors.New("kmsproxyd answered a wrong plaintext")
	}
	return nil
}

// viaDevKMS is the same Decrypt straight to devkms, with a Recipient.
func (be *benchEnv) viaDevKMS() error {
	out, err := be.direct.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: be.blob, Recipient: be.recipient})
	if err != nil {
		return fmt.Errorf("failed to decrypt directly at devkms: %w", err)
	}
	if len(out.CiphertextForRecipient) == 0 {
		return errors.New("devkms answered without CiphertextForRecipient")
	}
	return nil
}

// BenchmarkAttestedDecrypt is the per-request cost of one Decrypt through
// kmsproxyd's parent listener with an aws-sdk-go-v2 client, serially
// (concurrency 1) and in parallel (GOMAXPROCS clients): kmsproxyd adds the
// Recipient (a reused attestation document), calls devkms over TLS, and
// opens the envelope. x-t_floor is ns/op over t_floor; B/op and allocs/op
// count the client's and devkms's allocations too.
func BenchmarkAttestedDecrypt(b *testing.B) {
	be := newBenchEnv(b)
	t := tFloor(b)
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := be.viaProxy(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/t, "x-t_floor")
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := be.viaProxy(); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/t, "x-t_floor")
	})
}

// BenchmarkAddedLatency alternates the same Decrypt sent directly to devkms
// (with a Recipient of its own, so devkms does the same work) and sent
// through kmsproxyd, at concurrency 1, and reports the medians of each and
// their difference, the latency kmsproxyd adds, also as a multiple of
// t_floor.
func BenchmarkAddedLatency(b *testing.B) {
	be := newBenchEnv(b)
	t := tFloor(b)
	var viaProxy, direct []time.Duration
	for b.Loop() {
		s := time.Now()
		if err := be.viaDevKMS(); err != nil {
			b.Fatal(err)
		}
		m := time.Now()
		if err := be.viaProxy(); err != nil {
			b.Fatal(err)
		}
		direct = append(direct, m.Sub(s))
		viaProxy = append(viaProxy, time.Since(m))
	}
	p, d := median(viaProxy), median(direct)
	b.ReportMetric(float64(p.Nanoseconds()), "proxy-p50-ns")
	b.ReportMetric(float64(d.Nanoseconds()), "direct-p50-ns")
	b.ReportMetric(float64((p - d).Nanoseconds()), "added-p50-ns")
	b.ReportMetric(float64((p-d).Nanoseconds())/t, "added-x-t_floor")
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
