package main

import (
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// siblingBatches and siblingBatch size the measurement of t_rsa with the
// other vCPU busy: 3 batches of 200 decryptions, the median batch.
const (
	siblingBatches = 3
	siblingBatch   = 200
)

// measureRSASiblingBusy times the same RSA decryption as measureRSA on CPU
// 0 while a busy loop runs on CPU 1. On this kind of machine the two vCPUs
// share a physical core (SMT), so an RSA decryption slows down when the
// other vCPU works: that is how kmsproxyd's decryptions run in the CPU and
// throughput rows, where devkms and the load generator keep the other vCPU
// busy. The row only explains those rows; the targets stay on t_rsa.
func measureRSASiblingBusy(key *rsa.PrivateKey, ct []byte) (time.Duration, error) {
	if runtime.NumCPU() < 2 {
		return 0, fmt.Errorf("one CPU only")
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	spinning := make(chan error, 1)
	wg.Go(func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var set unix.CPUSet
		set.Set(1)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			spinning <- err
			return
		}
		spinning <- nil
		for x := uint64(1); !stop.Load(); x = x*6364136223846793005 + 1 {
		}
	})
	defer func() { stop.Store(true); wg.Wait() }()
	if err := <-spinning; err != nil {
		return 0, fmt.Errorf("failed to pin the busy loop to CPU 1: %w", err)
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set unix.CPUSet
	set.Set(0)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return 0, fmt.Errorf("failed to pin the measurement to CPU 0: %w", err)
	}
	defer func() {
		var all unix.CPUSet
		for i := range runtime.NumCPU() {
			all.Set(i)
		}
		_ = unix.SchedSetaffinity(0, &all)
	}()
	var batches []time.Duration
	for range siblingBatches {
		start := time.Now()
		for range siblingBatch {
			if _, err := rsa.DecryptOAEP(sha256.New(), nil, key, ct, nil); err != nil {
				return 0, err
			}
		}
		batches = append(batches, time.Since(start)/siblingBatch)
	}
	slices.Sort(batches)
	return batches[len(batches)/2], nil
}
