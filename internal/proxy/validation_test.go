package proxy_test

import (
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/enclavekit/kmsproxy/internal/enclavetest"
)

// inputTypes are the request types of the operations kmsproxyd serves.
var inputTypes = map[string]reflect.Type{
	"Decrypt": reflect.TypeFor[kms.DecryptInput](), "GenerateDataKey": reflect.TypeFor[kms.GenerateDataKeyInput](),
	"GenerateDataKeyPair": reflect.TypeFor[kms.GenerateDataKeyPairInput](), "GenerateRandom": reflect.TypeFor[kms.GenerateRandomInput](),
	"DeriveSharedSecret": reflect.TypeFor[kms.DeriveSharedSecretInput](), "Encrypt": reflect.TypeFor[kms.EncryptInput](),
	"GenerateDataKeyWithoutPlaintext":     reflect.TypeFor[kms.GenerateDataKeyWithoutPlaintextInput](),
	"GenerateDataKeyPairWithoutPlaintext": reflect.TypeFor[kms.GenerateDataKeyPairWithoutPlaintextInput](),
	"ReEncrypt":                           reflect.TypeFor[kms.ReEncryptInput](), "DescribeKey": reflect.TypeFor[kms.DescribeKeyInput](),
	"GetPublicKey": reflect.TypeFor[kms.GetPublicKeyInput](), "Sign": reflect.TypeFor[kms.SignInput](),
	"Verify": reflect.TypeFor[kms.VerifyInput](), "GenerateMac": reflect.TypeFor[kms.GenerateMacInput](),
	"VerifyMac": reflect.TypeFor[kms.VerifyMacInput](),
}

// randomValue returns a JSON value of t's shape with random content: each
// member of a struct present or not, strings and blobs of random length
// (empty included), numbers of any sign and size.
func randomValue(r *rand.Rand, t reflect.Type, keyID string, depth int) any {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == reflect.TypeFor[time.Time]():
		return r.Int64N(2_000_000_000)
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8:
		b := make([]byte, r.IntN(3)*r.IntN(200))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	switch t.Kind() {
	case reflect.String:
		switch r.IntN(4) {
		case 0:
			return ""
		case 1:
			return keyID
		case 2:
			return "alias/app-data"
		}
		return strings.Repeat("x", r.IntN(40))
	case reflect.Bool:
		return r.IntN(2) == 0
	case reflect.Int32, reflect.Int64, reflect.Int:
		switch r.IntN(3) {
		case 0:
			return r.IntN(2048) - 1024
		case 1:
			return 1 + r.IntN(64)
		}
		return r.Int32()
	case reflect.Slice:
		n := r.IntN(3)
		out := make([]any, n)
		for i := range out {
			out[i] = randomValue(r, t.Elem(), keyID, depth+1)
		}
		return out
	case reflect.Map:
		m := map[string]any{}
		for range r.IntN(3) {
			m[strings.Repeat("k", 1+r.IntN(5))] = randomValue(r, t.Elem(), keyID, depth+1)
		}
		return m
	case reflect.Struct:
		m := map[string]any{}
		if depth > 2 {
			return m
		}
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() || r.IntN(2) == 0 {
				continue
			}
			m[f.Name] = randomValue(r, f.Type, keyID, depth+1)
		}
		return m
	}
	return nil
}

// TestRandomInputsAreValidationErrors sends 1,500 requests of random
// content, each of the right JSON types for one operation's members, to
// kmsproxyd. Whatever the AWS SDK refuses before sending (a required member
// missing, a string too short, a number out of range, an invalid nested
// member) must come back as KMS answers it, 400 ValidationException, and
// kmsproxyd must never answer one with a 500 of its own.
func TestRandomInputsAreValidationErrors(t *testing.T) {
	e := enclavetest.Start(t, enclavetest.Options{})
	hc, err := e.HTTPClient(e.LocalAddr)
	if err != nil {
		t.Fatal(err)
	}
	ops := make([]string, 0, len(inputTypes))
	for op := range inputTypes {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	r := rand.New(rand.NewPCG(1, 2))
	outcomes := map[string]int{}
	const n = 1500
	for i := range n {
		op := ops[r.IntN(len(ops))]
		body, err := json.Marshal(randomValue(r, inputTypes[op], e.KeyID, 0))
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodPost, "http://kmsproxy.enclave/", strings.NewReader(string(body)))
		req.Header.Set("X-Amz-Target", "TrentService."+op)
		req.Header.Set("Content-Type", "application/x-amz-json-1.1")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		var answer map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&answer)
		resp.Body.Close()
		typ, _ := answer["__type"].(string)
		if typ == "" {
			typ = "ok"
		}
		outcomes[typ]++
		if resp.StatusCode >= 500 || typ == "KMSInternalException" {
			t.Errorf("request %d, %s %s: %d %v", i, op, body, resp.StatusCode, answer)
		}
		if typ == "ValidationException" && resp.StatusCode != http.StatusBadRequest {
			t.Errorf("request %d: ValidationException with status %d", i, resp.StatusCode)
		}
	}
	t.Logf("%d random requests: %v", n, outcomes)
	if outcomes["ValidationException"] < n/10 {
		t.Errorf("only %d ValidationExceptions in %d random requests: the generator does not exercise validation", outcomes["ValidationException"], n)
	}
}
