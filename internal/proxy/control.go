package proxy

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/enclavekit/kmsproxy/internal/attestation"
	"github.com/enclavekit/kmsproxy/internal/credentials"
	"github.com/enclavekit/kmsproxy/internal/kmsapi"
	"github.com/enclavekit/kmsproxy/internal/recipient"
)

// maxControlBody bounds the body of POST /v1/attestation: two base64 fields
// of at most attestation.MaxNonceSize and MaxRequestedDataSize bytes each.
// PUT /v1/credentials has its own limit, credentials.MaxPushBody.
const maxControlBody = 16 << 10

func (s *Server) serveHealthz(w http.ResponseWriter, r *http.Request) {
	writeControlJSON(w, http.StatusOK, map[string]any{"status": "serving"})
}

// readiness is the body of /readyz.
type readiness struct {
	Ready       bool               `json:"ready"`
	Recipient   recipient.Status   `json:"recipient"`
	Credentials credentials.Status `json:"credentials"`
	Upstream    upstreamStatus     `json:"upstream"`
	KMS         acceptanceStatus   `json:"kms"`
}

type upstreamStatus struct {
	Connections int     `json:"connections"`
	ClockOffset float64 `json:"clock_offset_seconds,omitempty"`
}

func (s *Server) readiness() readiness {
	rd := readiness{
		Recipient:   s.cfg.Recipient.Status(),
		Credentials: s.cfg.Credentials.Status(),
		Upstream:    upstreamStatus{Connections: s.cfg.Upstream.Conns()},
		KMS:         s.acceptance.status(),
	}
	if off, ok := s.cfg.Upstream.ClockOffset(); ok {
		rd.Upstream.ClockOffset = off.Seconds()
	}
	rd.Ready = rd.Recipient.Ready && rd.Credentials.Ready && rd.KMS.AttestationAccepted
	return rd
}

func (s *Server) serveReadyz(w http.ResponseWriter, r *http.Request) {
	rd := s.readiness()
	status := http.StatusOK
	if !rd.Ready {
		status = http.StatusServiceUnavailable
	}
	writeControlJSON(w, status, rd)
}

// info is the body of /v1/info.
type info struct {
	Version        string            `json:"version"`
	Uptime         string            `json:"uptime"`
	Attestation    string            `json:"attestation"` // whose PCRs these are: "Nitro Enclave" (pcrs) or "NitroTPM" (nitrotpm_pcrs)
	PCRs           map[string]string `json:"pcrs"`
	KeyFingerprint string            `json:"key_fingerprint"`
	KeyBits        int               `json:"key_bits"`
	Settings       map[string]any    `json:"settings"`
	Policy         any               `json:"policy"`
}

func (s *Server) serveInfo(w http.ResponseWriter, r *http.Request) {
	st := s.cfg.Recipient.Status()
	pcrs := make(map[string]string, len(st.PCRs))
	idx := make([]int, 0, len(st.PCRs))
	for i := range st.PCRs {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		pcrs[strconv.Itoa(i)] = hex.EncodeToString(st.PCRs[i])
	}
	writeControlJSON(w, http.StatusOK, info{
		Version:        s.cfg.Version,
		Uptime:         time.Since(s.started).Round(time.Second).String(),
		Attestation:    st.Kind.String(),
		PCRs:           pcrs,
		KeyFingerprint: st.KeyFingerprint,
		KeyBits:        st.KeyBits,
		Settings:       s.cfg.Settings,
		Policy:         s.cfg.Policy.Summary(),
	})
}

// attestationRequest is the body of POST /v1/attestation.
type attestationRequest struct {
	Nonce    []byte `json:"nonce"`
	UserData []byte `json:"user_data"`
}

// serveAttestation returns a fresh attestation document for a remote
// verifier, binding its nonce and, inside kmsproxyd's requested-attestation
// structure (attestation.EncodeRequested), its user data and this
// listener's name, so the document cannot pass for one the enclave made for
// itself. It carries no public key. Each listener may ask the NSM for
// AttestationBurst documents at once and then one per AttestationInterval.
func (l *listenerHandler) serveAttestation(w http.ResponseWriter, r *http.Request) {
	s := l.s
	outcome := "ok"
	fail := func(err *kmsapi.Error) {
		outcome = err.Type
		kmsapi.WriteError(w, err)
	}
	defer func() { s.metrics.attestations.WithLabelValues(l.name, outcome).Inc() }()
	var req attestationRequest
	if err := decodeControl(w, r, &req); err != nil {
		fail(kmsapi.AsError(err, "internal error"))
		return
	}
	if len(req.UserData) > attestation.MaxRequestedDataSize {
		fail(kmsapi.Errorf(kmsapi.Validation, "user_data is %d bytes; a requested document carries at most %d "+
			"(NSM's %d less the structure kmsproxyd wraps it in, which names this listener)",
			len(req.UserData), attestation.MaxRequestedDataSize, attestation.MaxUserDataSize))
		return
	}
	userData, err := attestation.EncodeRequested(l.name, req.UserData)
	if err != nil {
		fail(kmsapi.Errorf(kmsapi.Validation, "%s", err))
		return
	}
	ar := attestation.Request{Nonce: req.Nonce, UserData: userData}
	if err := ar.Validate(); err != nil {
		fail(kmsapi.Errorf(kmsapi.Validation, "%s", err))
		return
	}
	if !l.attestations.Allow() {
		fail(kmsapi.Errorf(kmsapi.Throttling, "the %s listener may request %d attestation documents at once and then one every %s; retry with backoff",
			l.name, AttestationBurst, AttestationInterval))
		return
	}
	ctx, cancel := s.withTimeout(r.Context())
	defer cancel()
	t := time.Now()
	doc, err := s.cfg.Attester.Attest(ctx, ar)
	s.metrics.nsm.Observe(time.Since(t).Seconds())
	if err != nil {
		s.metrics.nsmFails.Inc()
		s.log.Warn("attestation for a remote verifier failed", "listener", l.name, "step", stepAttestation, "err", err)
		fail(kmsapi.Errorf(kmsapi.KMSInternal, "attestation: failed to obtain an attestation document from the NSM"))
		return
	}
	writeControlJSON(w, http.StatusOK, map[string]string{"document": base64.StdEncoding.EncodeToString(doc)})
}

// serveCredentials accepts credentials pushed by the parent
// (kmsproxyctl credentials push) when kmsproxyd runs with --credentials=push
// and the listener's policy allows it.
func (l *listenerHandler) serveCredentials(w http.ResponseWriter, r *http.Request) {
	s := l.s
	// The policy first: a listener that may not push learns nothing more.
	if err := l.rules.AllowCredentialsPush(); err != nil {
		writeControlDenied(w, err)
		return
	}
	if s.cfg.Push == nil {
		kmsapi.WriteError(w, &kmsapi.Error{Type: kmsapi.Validation, Status: http.StatusConflict,
			Message: "kmsproxyd does not take pushed credentials: it runs with --credentials=" + string(s.cfg.Credentials.Status().Mode)})
		return
	}
	// DecodePush reads at most credentials.MaxPushBody+1 bytes and names
	// the limit itself; the MaxBytesReader only stops a client that sends
	// more from being read to the end.
	body := http.MaxBytesReader(w, r.Body, credentials.MaxPushBody+1)
	c, err := credentials.DecodePush(body)
	if err == nil {
		err = s.cfg.Push.Set(c)
	}
	if err != nil {
		// credentials errors name the field that is wrong, never its value.
		kmsapi.WriteError(w, kmsapi.Errorf(kmsapi.Validation, "%s", err))
		return
	}
	st := s.cfg.Push.Status()
	s.log.Info("credentials pushed", "listener", l.name, "expires", st.Expires)
	writeControlJSON(w, http.StatusOK, st)
}

func decodeControl(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxControlBody))
	if err != nil {
		return kmsapi.Errorf(kmsapi.Validation, "request body over %d bytes or unreadable", maxControlBody)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if len(body) == 0 {
		return nil
	}
	if err := dec.Decode(v); err != nil {
		return kmsapi.Errorf(kmsapi.Serialization, "malformed JSON body: want {\"nonce\":\"<base64>\",\"user_data\":\"<base64>\"}")
	}
	return nil
}

func writeControlJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "failed to encode", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
