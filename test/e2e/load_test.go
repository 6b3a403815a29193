package e2e

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/smithy-go"
)

const (
	// slack is added to --request-timeout for a request's client-side
	// deadline: kmsproxyd must answer within its request timeout; the slack
	// covers scheduling on a busy 2-core machine. A request still running
	// at the deadline counts as hung.
	slack = 5 * time.Second
	// resumeWithin is how soon after a fault ends a request must succeed
	// again: service resumes within a second of the fault ending.
	resumeWithin = time.Second
	// maxPerWorker bounds the requests one load worker sends in a phase.
	maxPerWorker = 5000
	// maxProblems bounds the problems a tally keeps for the report.
	maxProblems = 20
)

// attempt is one request: nil when kmsproxyd answered right, a
// *wrongAnswer when it answered wrong, or the client's error.
type attempt func(ctx context.Context) error

// wrongAnswer is a success with the wrong content.
type wrongAnswer struct{ what string }

func (w *wrongAnswer) Error() string { return "wrong answer: " + w.what }

// expectation judges an error answer: nil when it is the clear, KMS-shaped
// error the fault must produce.
type expectation func(code, msg string) error

// expectError accepts an error of the exception type code whose message is
// not empty and, when contains is given, holds one of those strings (the
// step kmsproxyd names, or KMS's own message).
func expectError(code string, contains ...string) expectation {
	return func(gotCode, msg string) error {
		if gotCode != code {
			return fmt.Errorf("exception %s", gotCode)
		}
		if strings.TrimSpace(msg) == "" {
			return fmt.Errorf("%s without a message", gotCode)
		}
		if len(contains) == 0 {
			return nil
		}
		for _, c := range contains {
			if strings.Contains(msg, c) {
				return nil
			}
		}
		return fmt.Errorf("%s message %q names none of %q", gotCode, msg, contains)
	}
}

// anyOf accepts what any of es accepts.
func anyOf(es ...expectation) expectation {
	return func(code, msg string) error {
		var errs []error
		for _, e := range es {
			err := e(code, msg)
			if err == nil {
				return nil
			}
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
}

// noErrors accepts no error at all.
func noErrors(code, msg string) error { return fmt.Errorf("%s: %s", code, msg) }

// tally counts the outcomes of a load phase.
type tally struct {
	mu       sync.Mutex
	ok       int
	codes    map[string]int
	examples map[string]string
	problems []string
	dropped  int
	slowest  time.Duration
}

func (ta *tally) problem(format string, args ...any) {
	if len(ta.problems) < maxProblems {
		ta.problems = append(ta.problems, fmt.Sprintf(format, args...))
	} else {
		ta.dropped++
	}
}

// total is the number of requests answered.
func (ta *tally) total() int {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	n := ta.ok
	for _, c := range ta.codes {
		n += c
	}
	return n + len(ta.problems) + ta.dropped
}

func (ta *tally) errors(code string) int {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	return ta.codes[code]
}

func (ta *tally) oks() int {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	return ta.ok
}

func (ta *tally) String() string {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	var parts []string
	parts = append(parts, fmt.Sprintf("%d right answers", ta.ok))
	codes := make([]string, 0, len(ta.codes))
	for c := range ta.codes {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	for _, c := range codes {
		parts = append(parts, fmt.Sprintf("%d %s (%q)", ta.codes[c], c, ta.examples[c]))
	}
	parts = append(parts, fmt.Sprintf("%d problems; slowest %s", len(ta.problems)+ta.dropped, ta.slowest.Round(time.Millisecond)))
	return strings.Join(parts, ", ")
}

// load runs workers that each send requests (do) one after another for
// duration d, each with a deadline of budget, and judges every answer:
// right, or an error exp accepts. Anything else — a wrong answer, an error
// that is not KMS-shaped, one exp refuses, a request that hangs past its
// budget — is reported on t.
func load(t testing.TB, name string, workers int, d, budget time.Duration, do attempt, exp expectation) *tally {
	t.Helper()
	ta := &tally{codes: map[string]int{}, examples: map[string]string{}}
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := 0; i < maxPerWorker && time.Now().Before(end); i++ {
				judge(ta, budget, do, exp)
			}
		})
	}
	wg.Wait()
	t.Logf("%s: %s", name, ta)
	for _, p := range ta.problems {
		t.Errorf("%s: %s", name, p)
	}
	if ta.dropped > 0 {
		t.Errorf("%s: and %d more problems", name, ta.dropped)
	}
	if ta.total() == 0 {
		t.Errorf("%s: no request was answered", name)
	}
	return ta
}

// judge sends one request and records its outcome.
func judge(ta *tally, budget time.Duration, do attempt, exp expectation) {
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	start := time.Now()
	err := do(ctx)
	took := time.Since(start)
	ta.mu.Lock()
	defer ta.mu.Unlock()
	ta.slowest = max(ta.slowest, took)
	var wrong *wrongAnswer
	var apiErr smithy.APIError
	switch {
	case ctx.Err() != nil || took > budget:
		ta.problem("a request hung: no answer after %s (%v)", took.Round(time.Millisecond), err)
	case err == nil:
		ta.ok++
	case errors.As(err, &wrong):
		ta.problem("%v", err)
	case errors.As(err, &apiErr):
		if e := exp(apiErr.ErrorCode(), apiErr.ErrorMessage()); e != nil {
			ta.problem("unexpected error answer: %v", e)
			return
		}
		ta.codes[apiErr.ErrorCode()]++
		if _, ok := ta.examples[apiErr.ErrorCode()]; !ok {
			ta.examples[apiErr.ErrorCode()] = apiErr.ErrorMessage()
		}
	default:
		ta.problem("not a KMS-shaped error: %v", err)
	}
}

// resume sends requests one after another, each with a deadline of
// budget, from the moment the fault ended until one is answered right, and
// fails t unless that happens within resumeWithin. It returns how long it
// took.
func resume(t testing.TB, name string, budget time.Duration, do attempt) time.Duration {
	t.Helper()
	start := time.Now()
	var last error
	for i := 0; i < 1000 && time.Since(start) < resumeWithin; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), budget)
		last = do(ctx)
		cancel()
		if last == nil {
			took := time.Since(start)
			if took > resumeWithin {
				t.Errorf("%s: the first right answer came %s after the fault ended, over %s", name, took.Round(time.Millisecond), resumeWithin)
			} else {
				t.Logf("%s: service resumed %s after the fault ended", name, took.Round(time.Millisecond))
			}
			return took
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%s: no right answer within %s after the fault ended; last: %v", name, resumeWithin, last)
	return time.Since(start)
}
