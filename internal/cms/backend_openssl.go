//go:build cgo && openssl && (amd64 || arm64)

package cms

// The OpenSSL backend: the RSA-OAEP unwrap through libcrypto (OpenSSL 3),
// linked statically into the enclave's kmsproxyd. It is selected by an
// explicit build tag, not by cgo alone, so that a machine with Go but no
// libssl-dev still builds and tests everything (go test -race needs cgo).
//
// The seam is narrow: a private key is handed to libcrypto once, when the
// Key is made (EVP_PKEY_fromdata from the big-number components, read in
// place from the Go key's words), each decryption is one cgo call doing one
// EVP_PKEY_decrypt, and Destroy frees the EVP_PKEY, whose RSA components
// OpenSSL frees with BN_clear_free (zeroed first).
//
// Little-endian only (amd64, arm64: every Nitro Enclaves host): the key's
// components go to OpenSSL as native-endian byte strings, which is what a
// slice of little-endian big.Word limbs is on those machines alone.

/*
#cgo LDFLAGS: -lcrypto

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <openssl/params.h>
#include <openssl/rsa.h>

#if OPENSSL_VERSION_MAJOR < 3
#error "the openssl backend needs OpenSSL 3 (libssl-dev 3.x)"
#endif

// kp_init initialises libcrypto without reading any configuration file
// (OPENSSL_CONF could otherwise load providers or engines into the process)
// and without an atexit handler.
static int kp_init(void) {
	int ok = OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG | OPENSSL_INIT_NO_ATEXIT, NULL);
	ERR_clear_error();
	return ok;
}

// kp_load builds an RSA key pair from native-endian big-number byte strings
// (n, e, d, p, q, d mod p-1, d mod q-1, q^-1 mod p). OpenSSL copies them into
// BIGNUMs of its own; the buffers stay the caller's.
static EVP_PKEY *kp_load(unsigned char *n, size_t nlen, unsigned char *e, size_t elen,
		unsigned char *d, size_t dlen, unsigned char *p, size_t plen, unsigned char *q, size_t qlen,
		unsigned char *dp, size_t dplen, unsigned char *dq, size_t dqlen, unsigned char *qinv, size_t qinvlen) {
	OSSL_PARAM params[] = {
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, n, nlen),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, e, elen),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_D, d, dlen),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_FACTOR1, p, plen),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_FACTOR2, q, qlen),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_EXPONENT1, dp, dplen),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_EXPONENT2, dq, dqlen),
		OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_COEFFICIENT1, qinv, qinvlen),
		OSSL_PARAM_END,
	};
	EVP_PKEY *pkey = NULL;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0
			|| EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_KEYPAIR, params) <= 0) {
		EVP_PKEY_free(pkey);
		pkey = NULL;
	}
	EVP_PKEY_CTX_free(ctx);
	ERR_clear_error();
	return pkey;
}

// kp_new_ctx makes a decryption context for pkey set up for RSAES-OAEP with
// SHA-256, MGF1-SHA-256 and the empty label. A context serves one thread at
// a time; the EVP_PKEY it holds a reference to may be shared.
static EVP_PKEY_CTX *kp_new_ctx(EVP_PKEY *pkey) {
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (ctx == NULL || EVP_PKEY_decrypt_init(ctx) <= 0
			|| EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) <= 0
			|| EVP_PKEY_CTX_set_rsa_oaep_md_name(ctx, "SHA256", NULL) <= 0
			|| EVP_PKEY_CTX_set_rsa_mgf1_md_name(ctx, "SHA256", NULL) <= 0) {
		EVP_PKEY_CTX_free(ctx);
		ctx = NULL;
	}
	ERR_clear_error();
	return ctx;
}

// kp_decrypt decrypts in into out (outcap bytes) and returns 1 with the
// length in *outlen, or 0 whatever went wrong. The thread's error queue is
// emptied in the same call: its entries would say why OAEP failed.
static int kp_decrypt(EVP_PKEY_CTX *ctx, unsigned char *out, size_t *outlen, size_t outcap,
		const unsigned char *in, size_t inlen) {
	*outlen = outcap;
	if (EVP_PKEY_decrypt(ctx, out, outlen, in, inlen) > 0) {
		return 1;
	}
	*outlen = 0;
	ERR_clear_error();
	return 0;
}

// kp_decrypt_fresh is kp_decrypt with a context made for this one call.
static int kp_decrypt_fresh(EVP_PKEY *pkey, unsigned char *out, size_t *outlen, size_t outcap,
		const unsigned char *in, size_t inlen) {
	EVP_PKEY_CTX *ctx = kp_new_ctx(pkey);
	if (ctx == NULL) {
		*outlen = 0;
		return 0;
	}
	int ok = kp_decrypt(ctx, out, outlen, outcap, in, inlen);
	EVP_PKEY_CTX_free(ctx);
	return ok;
}

static const char *kp_version(void) {
	return OpenSSL_version(OPENSSL_VERSION);
}
*/
import "C"

import (
	"crypto/rsa"
	"errors"
	"math/big"
	"runtime"
	"sync"
	"unsafe"
)

// opensslInit is libcrypto's one initialisation.
var opensslInit = sync.OnceValue(func() bool { return C.kp_init() == 1 })

func init() {
	// OpenSSL in front: it is the default wherever it is linked.
	backends = append([]backendImpl{{
		name:    BackendOpenSSL,
		version: func() string { return C.GoString(C.kp_version()) },
		load:    func(priv *rsa.PrivateKey) (unwrapper, error) { return loadOpenSSL(priv, true) },
	}}, backends...)
}

// sslKey is libcrypto's copy of one private key. Decryption contexts
// come from a pool of GOMAXPROCS contexts, made with the key: a context
// cannot be shared by two threads at once, making one costs about as much
// as 3 % of a decryption (BenchmarkOpenSSLContext), and the pool doubles as
// the limit on concurrent cgo calls, which would otherwise each take an OS
// thread of their own under load.
type sslKey struct {
	pkey *C.EVP_PKEY
	size int                  // modulus bytes: the output buffer
	pool chan *C.EVP_PKEY_CTX // nil: a new context per call (for the benchmark)
	ctxs int                  // contexts in the pool when all are back
	once sync.Once            // destroy runs once
}

// errOpenSSLLoad is the error of a key libcrypto did not take.
var errOpenSSLLoad = errors.New("cms: libcrypto did not accept the RSA key")

// loadOpenSSL hands priv's components to libcrypto. pooled says whether
// decryptions reuse contexts (always, except to measure the difference).
func loadOpenSSL(priv *rsa.PrivateKey, pooled bool) (*sslKey, error) {
	if !opensslInit() {
		return nil, errors.New("cms: libcrypto failed to initialise")
	}
	if len(priv.Primes) != 2 || priv.N == nil || priv.D == nil || priv.E <= 0 {
		return nil, errors.New("cms: the openssl backend takes two-prime RSA keys")
	}
	pre := priv.Precomputed
	if pre.Dp == nil || pre.Dq == nil || pre.Qinv == nil {
		// A hand-built key without Precompute: compute the CRT values on a
		// copy, so that the caller's key is not changed, and clear them
		// once libcrypto has its own.
		tmp := *priv
		tmp.Precomputed = rsa.PrecomputedValues{}
		tmp.Precompute()
		pre = tmp.Precomputed
		if pre.Dp == nil || pre.Dq == nil || pre.Qinv == nil {
			return nil, errors.New("cms: failed to precompute the key's CRT values")
		}
		defer wipePrecomputed(&pre)
	}
	e := uint64(priv.E)
	eBuf := (*[8]byte)(unsafe.Pointer(&e))[:] // native-endian, as the others
	n, nl := limbs(priv.N)
	eb, el := bytesArg(eBuf)
	d, dl := limbs(priv.D)
	p, pl := limbs(priv.Primes[0])
	q, ql := limbs(priv.Primes[1])
	dp, dpl := limbs(pre.Dp)
	dq, dql := limbs(pre.Dq)
	qi, qil := limbs(pre.Qinv)
	pkey := C.kp_load(n, nl, eb, el, d, dl, p, pl, q, ql, dp, dpl, dq, dql, qi, qil)
	runtime.KeepAlive(priv)
	if pkey == nil {
		return nil, errOpenSSLLoad
	}
	k := &sslKey{pkey: pkey, size: priv.Size()}
	if pooled {
		k.ctxs = max(runtime.GOMAXPROCS(0), 1)
		k.pool = make(chan *C.EVP_PKEY_CTX, k.ctxs)
		for range k.ctxs {
			ctx := C.kp_new_ctx(pkey)
			if ctx == nil {
				k.ctxs = len(k.pool)
				k.destroy()
				return nil, errors.New("cms: libcrypto failed to make an RSA-OAEP decryption context")
			}
			k.pool <- ctx
		}
	}
	return k, nil
}

// limbs passes x's words to C in place: a pointer into Go memory that holds
// no Go pointers, read by libcrypto during the call only (cgo's rules).
func limbs(x *big.Int) (*C.uchar, C.size_t) {
	w := x.Bits()
	if len(w) == 0 {
		return nil, 0
	}
	return (*C.uchar)(unsafe.Pointer(&w[0])), C.size_t(len(w) * int(unsafe.Sizeof(w[0])))
}

func bytesArg(b []byte) (*C.uchar, C.size_t) {
	if len(b) == 0 {
		return nil, 0
	}
	return (*C.uchar)(unsafe.Pointer(&b[0])), C.size_t(len(b))
}

func (k *sslKey) decryptOAEP(ciphertext []byte) ([]byte, error) {
	if len(ciphertext) == 0 || len(ciphertext) > k.size {
		return nil, errOAEP
	}
	out := make([]byte, k.size)
	var n C.size_t
	var ok C.int
	in, inLen := bytesArg(ciphertext)
	o, oLen := bytesArg(out)
	if k.pool == nil {
		ok = C.kp_decrypt_fresh(k.pkey, o, &n, oLen, in, inLen)
	} else {
		ctx := <-k.pool
		ok = C.kp_decrypt(ctx, o, &n, oLen, in, inLen)
		k.pool <- ctx
	}
	if ok != 1 || int(n) > len(out) {
		clear(out)
		return nil, errOAEP
	}
	clear(out[n:])
	return out[:n:n], nil
}

// destroy frees the contexts and the key; OpenSSL clears the key's
// components as it frees them (BN_clear_free).
func (k *sslKey) destroy() {
	k.once.Do(func() {
		for range k.ctxs {
			C.EVP_PKEY_CTX_free(<-k.pool)
		}
		C.EVP_PKEY_free(k.pkey)
		k.pkey = nil
	})
}
