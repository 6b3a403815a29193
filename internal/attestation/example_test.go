package attestation_test

import (
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/enclavekit/kmsproxy/internal/attestation"
)

func ExampleParse() {
	b, err := os.ReadFile("testdata/vectors/measured-full.cbor")
	if err != nil {
		log.Fatal(err)
	}
	doc, err := attestation.Parse(b)
	if err != nil {
		log.Fatal(err)
	}
	// Nothing in doc is trustworthy before Verify succeeds.
	fmt.Println("module:", doc.ModuleID)
	fmt.Println("time:", doc.Timestamp.Format(time.RFC3339))
	fmt.Println("PCR0:", hex.EncodeToString(doc.PCRs[0])[:16]+"...")
	fmt.Println("user data:", string(doc.UserData))
	fmt.Println("chain:", len(doc.ChainSubjects()), "certificates")
	// Output:
	// module: i-0a1b2c3d4e5f60718-enc0123456789abcdef
	// time: 2025-06-01T12:00:03Z
	// PCR0: 1986a721a9ce893c...
	// user data: {"purpose":"kmsproxy test vector"}
	// chain: 3 certificates
}

func ExampleVerify() {
	b, err := os.ReadFile("testdata/vectors/measured-full.cbor")
	if err != nil {
		log.Fatal(err)
	}
	doc, err := attestation.Parse(b)
	if err != nil {
		log.Fatal(err)
	}
	// Documents from real enclaves chain to attestation.NitroRoots(); this
	// one was signed by a simulator CA whose root is in root.pem.
	rootPEM, err := os.ReadFile("testdata/vectors/root.pem")
	if err != nil {
		log.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)

	if err := attestation.Verify(doc, roots, doc.Timestamp); err == nil {
		fmt.Println("verified at its own timestamp")
	}
	if err := attestation.Verify(doc, roots, doc.Timestamp.Add(4*time.Hour)); errors.Is(err, attestation.ErrExpired) {
		fmt.Println("refused four hours later: the 3-hour leaf expired")
	}
	if err := attestation.Verify(doc, attestation.NitroRoots(), doc.Timestamp); errors.Is(err, attestation.ErrChain) {
		fmt.Println("refused under the AWS root:", err.(*attestation.Error).Check)
	}
	// Output:
	// verified at its own timestamp
	// refused four hours later: the 3-hour leaf expired
	// refused under the AWS root: untrusted certificate chain
}
