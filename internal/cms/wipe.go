package cms

import (
	"crypto/rsa"
	"math/big"
	"reflect"
	"unsafe"
)

// WipePrivateKey overwrites with zeros every secret word of priv that Go lets
// a program reach: D, the primes, the exported precomputed values (Dp, Dq,
// Qinv and the multi-prime CRT values), and crypto/rsa's own precomputed copy
// of the key (the unexported field of PrecomputedValues that holds p, q, d,
// dP, dQ, qInv and the Montgomery constants as crypto/internal/fips140
// numbers). Each number's whole backing array is cleared, its spare capacity
// included, and then set to zero. priv is unusable afterwards.
//
// What it cannot reach: copies the runtime made and no longer references
// (garbage from key generation and from big.Int arithmetic, old stack
// frames). Those live until the memory is reused.
func WipePrivateKey(priv *rsa.PrivateKey) {
	if priv == nil {
		return
	}
	wipeInt(priv.D)
	for _, p := range priv.Primes {
		wipeInt(p)
	}
	wipePrecomputed(&priv.Precomputed)
}

func wipePrecomputed(pre *rsa.PrecomputedValues) {
	wipeInt(pre.Dp)
	wipeInt(pre.Dq)
	wipeInt(pre.Qinv)
	//lint:ignore SA1019 Precompute still fills in the deprecated CRT values for multi-prime keys: they are secrets to clear.
	for _, v := range pre.CRTValues {
		wipeInt(v.Exp)
		wipeInt(v.Coeff)
		wipeInt(v.R)
	}
	forEachHiddenWord(pre, func(b []byte) { clear(b) })
}

// wipeInt clears x's words up to the capacity of its backing array and
// sets it to 0 (which keeps the now zeroed array).
func wipeInt(x *big.Int) {
	if x == nil {
		return
	}
	w := x.Bits()
	clear(w[:cap(w)])
	x.SetInt64(0)
}

// hiddenWalkDepth bounds forEachHiddenWord's walk: the deepest integer slice
// under PrecomputedValues is PrecomputedValues.fips → PrivateKey.p →
// Modulus.nat → Nat.limbs, four steps of pointer and field.
const hiddenWalkDepth = 12

// forEachHiddenWord calls f with the memory (whole backing array, as bytes)
// of every slice of unsigned integers reachable through the unexported
// fields of pre: crypto/rsa's precomputed copy of the key. The walk follows
// pointers and struct fields of types from the crypto packages only, so it
// cannot wander into shared state, and stops at hiddenWalkDepth.
func forEachHiddenWord(pre *rsa.PrecomputedValues, f func([]byte)) {
	v := reflect.ValueOf(pre).Elem()
	t := v.Type()
	for i := range t.NumField() {
		if !t.Field(i).IsExported() {
			walkWords(v.Field(i), f, 0, map[uintptr]bool{})
		}
	}
}

func walkWords(v reflect.Value, f func([]byte), depth int, seen map[uintptr]bool) {
	if depth > hiddenWalkDepth {
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() || seen[v.Pointer()] || !fromCrypto(v.Type().Elem()) {
			return
		}
		seen[v.Pointer()] = true
		walkWords(v.Elem(), f, depth+1, seen)
	case reflect.Struct:
		for i := range v.NumField() {
			walkWords(v.Field(i), f, depth+1, seen)
		}
	case reflect.Slice:
		switch v.Type().Elem().Kind() {
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
			if v.Cap() == 0 {
				return
			}
			size := v.Cap() * int(v.Type().Elem().Size())
			f(unsafe.Slice((*byte)(v.UnsafePointer()), size))
		}
	}
}

// fromCrypto reports whether t is declared in a crypto package (crypto/rsa's
// internals: crypto/internal/fips140/rsa and .../bigmod).
func fromCrypto(t reflect.Type) bool {
	p := t.PkgPath()
	return p == "crypto" || len(p) > len("crypto/") && p[:len("crypto/")] == "crypto/"
}
