package devkms

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/enclavekit/kmsproxy/internal/kmsapi"
)

// MaxFaultLatency bounds injected latency. It is devkms's own limit, well
// above any timeout a KMS client uses (kmsproxyd's --request-timeout defaults
// to 10s), so a typo such as "10m" cannot park every request for long.
const MaxFaultLatency = time.Minute

// maxFaultsBody bounds a PUT /devkms/faults body; the largest valid document
// is well under 200 bytes.
const maxFaultsBody = 4 << 10

// Messages of the injected errors. The throttling message is KMS's own
// ("You have exceeded the rate at which you may call KMS. Reduce the
// frequency of your calls.", KMS Developer Guide, "Requests per second
// quotas"; real ThrottlingException answers carry it).
const (
	throttleMessage = "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls."
	faultMessage    = "devkms injected an internal error (fault injection)"
)

// Faults are the fault injection settings: every KMS request first waits
// Latency, then fails with ThrottlingException (400) with probability
// ThrottleRate, else with KMSInternalException (500) with probability
// ErrorRate. Control endpoints (/devkms/...) are never affected.
//
// In JSON (GET/PUT /devkms/faults) Latency is a Go duration string:
//
//	{"latency":"50ms","throttle_rate":0.1,"error_rate":0.02}
type Faults struct {
	Latency      time.Duration
	ThrottleRate float64
	ErrorRate    float64
}

// Validate reports the first invalid setting.
func (f Faults) Validate() error {
	if f.Latency < 0 || f.Latency > MaxFaultLatency {
		return fmt.Errorf("fault latency %s must be between 0 and %s", f.Latency, MaxFaultLatency)
	}
	if !(f.ThrottleRate >= 0 && f.ThrottleRate <= 1) {
		return fmt.Errorf("fault throttle rate %v must be between 0 and 1", f.ThrottleRate)
	}
	if !(f.ErrorRate >= 0 && f.ErrorRate <= 1) {
		return fmt.Errorf("fault error rate %v must be between 0 and 1", f.ErrorRate)
	}
	return nil
}

// clamped returns f with every setting moved into its valid range.
func (f Faults) clamped() Faults {
	f.Latency = min(max(f.Latency, 0), MaxFaultLatency)
	if !(f.ThrottleRate >= 0) { // also NaN
		f.ThrottleRate = 0
	}
	if !(f.ErrorRate >= 0) {
		f.ErrorRate = 0
	}
	f.ThrottleRate = min(f.ThrottleRate, 1)
	f.ErrorRate = min(f.ErrorRate, 1)
	return f
}

type faultsJSON struct {
	Latency      string  `json:"latency"`
	ThrottleRate float64 `json:"throttle_rate"`
	ErrorRate    float64 `json:"error_rate"`
}

// MarshalJSON writes f in the /devkms/faults form.
func (f Faults) MarshalJSON() ([]byte, error) {
	return json.Marshal(faultsJSON{Latency: f.Latency.String(), ThrottleRate: f.ThrottleRate, ErrorRate: f.ErrorRate})
}

// UnmarshalJSON reads the /devkms/faults form. Absent members are zero;
// unknown members are refused so a misspelt rate is not silently ignored.
func (f *Faults) UnmarshalJSON(b []byte) error {
	var j faultsJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return fmt.Errorf("failed to parse faults: %w", err)
	}
	var lat time.Duration
	if j.Latency != "" {
		var err error
		if lat, err = time.ParseDuration(j.Latency); err != nil {
			return fmt.Errorf("failed to parse faults: latency: %w", err)
		}
	}
	*f = Faults{Latency: lat, ThrottleRate: j.ThrottleRate, ErrorRate: j.ErrorRate}
	return nil
}

// faultInjector holds the current settings; safe for concurrent use.
type faultInjector struct {
	cur atomic.Pointer[Faults]
}

func (fi *faultInjector) set(f Faults) { fi.cur.Store(&f) }

func (fi *faultInjector) get() Faults { return *fi.cur.Load() }

// apply waits the injected latency and returns the injected error, if any.
func (fi *faultInjector) apply(ctx context.Context) error {
	f := fi.get()
	if f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return kmsapi.Errorf(kmsapi.KMSInternal, "devkms is shutting down")
		}
	}
	// math/rand/v2's top-level functions are safe for concurrent use.
	if f.ThrottleRate > 0 && rand.Float64() < f.ThrottleRate {
		return kmsapi.Errorf(kmsapi.Throttling, throttleMessage)
	}
	if f.ErrorRate > 0 && rand.Float64() < f.ErrorRate {
		return kmsapi.Errorf(kmsapi.KMSInternal, faultMessage)
	}
	return nil
}

// serveFaults answers GET and PUT /devkms/faults.
func (s *Server) serveFaults(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		writeControlJSON(w, http.StatusOK, s.faults.get())
	case http.MethodPut, http.MethodPost:
		body, err := kmsapi.ReadBody(r, maxFaultsBody)
		if err != nil {
			writeControlError(w, http.StatusRequestEntityTooLarge, err.Error())
			return
		}
		var f Faults
		if err := json.Unmarshal(body, &f); err != nil {
			writeControlError(w, http.StatusBadRequest, err.Error())
			return
		}
		if err := f.Validate(); err != nil {
			writeControlError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.SetFaults(f)
		s.log.Info("faults changed", "latency", f.Latency, "throttle_rate", f.ThrottleRate, "error_rate", f.ErrorRate)
		writeControlJSON(w, http.StatusOK, f)
	default:
		w.Header().Set("Allow", "GET, PUT")
		writeControlError(w, http.StatusMethodNotAllowed, "use GET or PUT")
	}
}

func writeControlJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"failed to encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeControlError(w http.ResponseWriter, status int, msg string) {
	writeControlJSON(w, status, map[string]string{"error": msg})
}
