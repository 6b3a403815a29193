package proxy

import (
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/enclavekit/kmsproxy/internal/policy"
)

// Metrics is kmsproxyd's Prometheus metric set, in its own registry. Labels
// carry listener, operation, outcome (an exception name), step and policy
// rule names: never key ids, request values or secrets.
//
// Every series about a listener's requests carries a listener label, and
// /metrics on a listener shows only its own such series unless its policy
// sets metrics_all_listeners: the parent instance, which reads /metrics on
// the parent listener, does not see what apps inside the enclave do, nor
// when. Series that belong to no listener (process, Go runtime, upstream
// connections, NSM, credentials, key rotation) are shown on every listener.
type Metrics struct {
	reg            *prometheus.Registry
	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	steps          *prometheus.HistogramVec
	inflight       *prometheus.GaugeVec
	conns          *prometheus.GaugeVec
	answersRefused *prometheus.CounterVec
	attestations   *prometheus.CounterVec
	nsm            prometheus.Histogram
	nsmFails       prometheus.Counter
	rotations      prometheus.Counter
	panics         prometheus.Counter
	cacheHits      *prometheus.CounterVec
	cacheMisses    *prometheus.CounterVec
	cacheEvictions *prometheus.CounterVec
	cacheEntries   *prometheus.GaugeVec
	// stepObs are steps' children, looked up once per listener and step:
	// the names are fixed, and every request observes them.
	stepObs map[[2]string]prometheus.Observer
}

// listenerLabel is the label that says which listener a series is about.
const listenerLabel = "listener"

// stepBuckets span 100 µs (an envelope decrypt is ~1 ms) to ~10 s (the
// request timeout).
var stepBuckets = prometheus.ExponentialBuckets(0.0001, 2.5, 12)

func newMetrics(s *Server) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmsproxy_requests_total",
			Help: "KMS API requests by listener, operation and outcome (ok or the exception name).",
		}, []string{"listener", "operation", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kmsproxy_request_duration_seconds",
			Help:    "Whole KMS API request latency inside kmsproxyd, by listener and operation.",
			Buckets: stepBuckets,
		}, []string{listenerLabel, "operation"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kmsproxy_step_duration_seconds",
			Help:    "Latency of each step of a request, by listener: attestation (getting a document, reused or new), upstream_wait (waiting for one of the --upstream-conns connections), upstream (KMS call incl. retries), envelope (CiphertextForRecipient decrypt).",
			Buckets: stepBuckets,
		}, []string{listenerLabel, "step"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kmsproxy_inflight_requests",
			Help: "KMS API requests being served now, by listener.",
		}, []string{listenerLabel}),
		conns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kmsproxy_open_connections",
			Help: "Connections open on each listener (at most its max_connections).",
		}, []string{listenerLabel}),
		answersRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmsproxy_answers_refused_total",
			Help: "KMS answers withheld from the caller because the key they name is not one the policy allows (rule: kms.accounts, kms.regions or the listener's keys).",
		}, []string{listenerLabel, "operation", "rule"}),
		attestations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmsproxy_requested_attestations_total",
			Help: "POST /v1/attestation requests by listener and outcome (ok or the exception name).",
		}, []string{listenerLabel, "outcome"}),
		nsm: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kmsproxy_nsm_attestation_duration_seconds",
			Help:    "Latency of NSM attestation calls (off the request path while documents are reused).",
			Buckets: stepBuckets,
		}),
		nsmFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kmsproxy_nsm_attestation_failures_total",
			Help: "NSM attestation calls that failed.",
		}),
		rotations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kmsproxy_key_rotations_total",
			Help: "Recipient RSA key rotations.",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kmsproxy_handler_panics_total",
			Help: "Panics recovered in request handlers.",
		}),
		cacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmsproxy_decrypt_cache_hits_total",
			Help: "Decrypt requests answered from the listener's decrypt cache, without KMS (listeners with decrypt_cache only).",
		}, []string{listenerLabel}),
		cacheMisses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmsproxy_decrypt_cache_misses_total",
			Help: "Decrypt requests the listener's decrypt cache could have answered but had no usable entry for, so they went to KMS (DryRun and Recipient requests are neither).",
		}, []string{listenerLabel}),
		cacheEvictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmsproxy_decrypt_cache_evictions_total",
			Help: "Decrypt cache entries dropped and zeroed, by listener and reason: age (max_age), uses (max_uses), capacity (max_entries), credentials (changed or expired).",
		}, []string{listenerLabel, "reason"}),
		cacheEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kmsproxy_decrypt_cache_entries",
			Help: "Answers held in the listener's decrypt cache now (at most its max_entries).",
		}, []string{listenerLabel}),
	}
	reg.MustRegister(m.requests, m.duration, m.steps, m.inflight, m.conns, m.answersRefused, m.attestations,
		m.nsm, m.nsmFails, m.rotations, m.panics, m.cacheHits, m.cacheMisses, m.cacheEvictions, m.cacheEntries,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kmsproxy_upstream_connections",
			Help: "Open connections to KMS (through vsock-proxy).",
		}, func() float64 { return float64(s.cfg.Upstream.Conns()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kmsproxy_credentials_expiry_timestamp_seconds",
			Help: "Unix time at which the upstream AWS credentials expire (0: they do not, or there are none).",
		}, func() float64 {
			if e := s.cfg.Credentials.Status().Expires; !e.IsZero() {
				return float64(e.Unix())
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kmsproxy_credentials_ready",
			Help: "1 when upstream AWS credentials are available and unexpired.",
		}, func() float64 { return boolGauge(s.cfg.Credentials.Status().Ready) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kmsproxy_clock_offset_seconds",
			Help: "KMS's Date header minus the enclave clock at the last answer (SigV4 fails beyond 5 minutes).",
		}, func() float64 {
			off, _ := s.cfg.Upstream.ClockOffset()
			return off.Seconds()
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kmsproxy_ready",
			Help: "1 when kmsproxyd is ready (key, attestation document, credentials).",
		}, func() float64 { return boolGauge(s.readiness().Ready) }),
	)
	m.stepObs = map[[2]string]prometheus.Observer{}
	for _, l := range policy.Listeners {
		// Each listener's series exist from the start, at zero.
		m.inflight.WithLabelValues(l)
		m.conns.WithLabelValues(l)
		for _, step := range steps {
			m.stepObs[[2]string{l, step}] = m.steps.WithLabelValues(l, step)
		}
	}
	return m
}

// cacheFor returns the decrypt cache series of a listener, which exist
// (at zero) from then on.
func (m *Metrics) cacheFor(listener string) cacheMetrics {
	cm := cacheMetrics{
		hits:    m.cacheHits.WithLabelValues(listener),
		misses:  m.cacheMisses.WithLabelValues(listener),
		entries: m.cacheEntries.WithLabelValues(listener),
	}
	for r, name := range evictReasonNames {
		cm.evictions[r] = m.cacheEvictions.WithLabelValues(listener, name)
	}
	return cm
}

func (m *Metrics) observeStep(listener, step string, d time.Duration) {
	o, ok := m.stepObs[[2]string{listener, step}]
	if !ok {
		o = m.steps.WithLabelValues(listener, step)
	}
	o.Observe(d.Seconds())
}

// handlerFor returns /metrics as the named listener may see it: every
// listener's series when all is set, otherwise only the series whose
// listener label is its own, and those without one.
func (m *Metrics) handlerFor(listener string, all bool) http.HandlerFunc {
	var g prometheus.Gatherer = m.reg
	if !all {
		g = ownSeries{m.reg, listener}
	}
	h := promhttp.HandlerFor(g, promhttp.HandlerOpts{})
	return h.ServeHTTP
}

// ownSeries gathers the registry's series, dropping those about another
// listener.
type ownSeries struct {
	g        prometheus.Gatherer
	listener string
}

func (o ownSeries) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := o.g.Gather()
	out := mfs[:0]
	for _, mf := range mfs {
		mf.Metric = slices.DeleteFunc(mf.Metric, func(m *dto.Metric) bool {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == listenerLabel {
					return lp.GetValue() != o.listener
				}
			}
			return false
		})
		if len(mf.Metric) > 0 {
			out = append(out, mf)
		}
	}
	return out, err
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
