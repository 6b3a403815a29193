// Command floor is the least an attested-Decrypt proxy built the way
// kmsproxyd's architecture prescribes can do: a net/http server that decodes a KMS JSON
// Decrypt, calls KMS through aws-sdk-go-v2 with a Recipient over a
// keep-alive TLS connection, opens the CiphertextForRecipient envelope and
// answers with the plaintext. It has no policy, logging, metrics, limits,
// request ids, key rotation or error mapping: none of what makes kmsproxyd
// a product. The benchmark table measures it beside kmsproxyd, in the same
// rounds and built the same way (so with OpenSSL's RSA where the default
// build has it), to show how much of kmsproxyd's CPU per Decrypt these
// parts cost by themselves on the same load; `go run ./test/bench ab -b
// FLOOR` compares it with a kmsproxyd build round by round.
//
// It takes the subset of kmsproxyd's flags the benchmark passes, so that it
// starts like kmsproxyd, and serves /readyz as kmsproxyd does once ready.
// It is a benchmark tool: it never dials vsock, and it exists only under
// test/bench.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/enclavekit/kmsproxy/internal/cms"
	"github.com/enclavekit/kmsproxy/internal/transport"
	"github.com/enclavekit/kmsproxy/test/bench/internal/standin"
)

const (
	// maxBody bounds a request: a Decrypt's CiphertextBlob is at most 6144
	// bytes (KMS API reference), in base64 and JSON.
	maxBody = 64 << 10
	// upstreamConns is kmsproxyd's default --upstream-conns.
	upstreamConns = 4
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "floor: error: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	fs.String("nsm", "sim", "only sim")
	simCA := fs.String("sim-ca", "", "NSM simulator CA `dir`")
	simPCRs := fs.String("sim-pcrs", "", "nitro-cli measurements JSON `file`")
	region := fs.String("region", "us-east-1", "AWS region")
	endpoint := fs.String("kms-endpoint", "", "KMS `URL`")
	dial := fs.String("kms-dial", "", "where connections to KMS go (unix:// or tcp://)")
	caFile := fs.String("kms-ca", "", "PEM `file` of KMS's CA")
	fs.String("credentials", "env", "only env")
	listen := fs.String("listen-parent", "", "the listener (unix:// or tcp://)")
	fs.String("listen-local", "", "ignored")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *simCA == "" || *endpoint == "" || *dial == "" || *caFile == "" || *listen == "" {
		return errors.New("--sim-ca, --kms-endpoint, --kms-dial, --kms-ca and --listen-parent are required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	// One key and one document for the whole run, as kmsproxyd reuses its
	// own for --attestation-ttl.
	id, err := standin.NewIdentity(ctx, *simCA, *simPCRs)
	if err != nil {
		return err
	}
	recipientKey, err := cms.NewKey(id.Key)
	if err != nil {
		return err
	}
	client, err := standin.NewKMS(standin.KMSConfig{
		Endpoint: *endpoint, Dial: *dial, CAFile: *caFile, Region: *region, Conns: upstreamConns,
		AccessKey: os.Getenv("AWS_ACCESS_KEY_ID"), SecretKey: os.Getenv("AWS_SECRET_ACCESS_KEY"), Token: os.Getenv("AWS_SESSION_TOKEN"),
	})
	if err != nil {
		return err
	}
	recipient := &types.RecipientInfo{AttestationDocument: id.Document, KeyEncryptionAlgorithm: types.KeyEncryptionMechanismRsaesOaepSha256}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ready":true,"recipient":{"next_key_ready":true}}`)
	})
	mux.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Amz-Target") != "TrentService.Decrypt" {
			http.Error(w, "only TrentService.Decrypt", http.StatusBadRequest)
			return
		}
		var in struct {
			CiphertextBlob []byte
			KeyId          *string
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&in); err != nil {
			http.Error(w, "bad JSON", http.StatusBadRequest)
			return
		}
		out, err := client.Decrypt(r.Context(), &kms.DecryptInput{CiphertextBlob: in.CiphertextBlob, KeyId: in.KeyId, Recipient: recipient})
		if err != nil {
			http.Error(w, "KMS failed", http.StatusBadGateway)
			return
		}
		plaintext, err := cms.DecryptWithKeys(out.CiphertextForRecipient, recipientKey)
		if err != nil {
			http.Error(w, "envelope failed", http.StatusInternalServerError)
			return
		}
		defer clear(plaintext)
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		json.NewEncoder(w).Encode(struct {
			KeyId               *string
			Plaintext           []byte
			EncryptionAlgorithm types.EncryptionAlgorithmSpec
		}{out.KeyId, plaintext, out.EncryptionAlgorithm})
	})

	a, err := standin.Addr(*listen)
	if err != nil {
		return fmt.Errorf("--listen-parent: %w", err)
	}
	ln, err := transport.Listen(a)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
