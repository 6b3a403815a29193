package cms_test

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/enclavekit/kmsproxy/internal/cms"
)

// A daemon keeps its current recipient key and, during a rotation, the
// previous one; Decrypt picks the one the envelope names.
func ExampleDecrypt() {
	previous, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		log.Fatal(err)
	}
	current, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		log.Fatal(err)
	}

	// What KMS returns in CiphertextForRecipient for a Recipient carrying
	// the current key (devkms builds it the same way).
	envelope, err := cms.Encrypt(rand.Reader, &current.PublicKey, []byte("32-byte data key, for example..."))
	if err != nil {
		log.Fatal(err)
	}

	plaintext, err := cms.Decrypt(envelope, current, previous)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", plaintext)
	clear(plaintext)

	// An envelope for neither key.
	stranger, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		log.Fatal(err)
	}
	envelope, err = cms.Encrypt(rand.Reader, &stranger.PublicKey, []byte("not for us"))
	if err != nil {
		log.Fatal(err)
	}
	_, err = cms.Decrypt(envelope, current, previous)
	fmt.Println(errors.Is(err, cms.ErrNoMatchingKey))
	// Output:
	// 32-byte data key, for example...
	// true
}

// Summary is what `kmsproxyctl cms inspect` prints.
func ExampleEnvelope_Summary() {
	envelope, err := os.ReadFile("testdata/vectors/rsa2048-4096.ber")
	if err != nil {
		log.Fatal(err)
	}
	e, err := cms.Parse(envelope)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(e.Summary())
	// Output:
	// CMS EnvelopedData, 4573 bytes, BER-indefinite
	//   content type:      envelopedData (1.2.840.113549.1.7.3)
	//   version:           2
	//   recipient:         KeyTransRecipientInfo version 2
	//     identifier:      subjectKeyIdentifier ffc07b6fd0053fb3aa196ef458bd5809684f132d4d8c0dec6e3f7ae16544b364 (SHA-256 of the SubjectPublicKeyInfo, as KMS writes it)
	//     key encryption:  RSAES-OAEP (1.2.840.113549.1.1.7), hash SHA-256, mask MGF1 with SHA-256, NULL hash parameters, default empty label
	//     encrypted key:   256 bytes (RSA-2048)
	//   encrypted content: data (1.2.840.113549.1.7.1)
	//     algorithm:       AES-256-CBC (2.16.840.1.101.3.4.1.42)
	//     iv:              997b43593ddfd283b8f209cf857babf8
	//     ciphertext:      4112 bytes in 5 chunk(s), constructed [0], chunk sizes 4 of 1000, 112
	//     plaintext:       4096 to 4111 bytes
}
