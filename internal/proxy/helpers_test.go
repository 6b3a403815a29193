package proxy_test

import (
	"crypto"
	"crypto/sha256"
	"encoding/hex"
)

const cryptoSHA256 = crypto.SHA256

func sha256Sum(b []byte) []byte { h := sha256.Sum256(b); return h[:] }

func hexOf(b []byte) string { return hex.EncodeToString(b) }
