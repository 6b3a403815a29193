package proxy

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is kmsproxyd's Prometheus metric set, in its own registry. Labels
// carry listener, operation, outcome (an exception name) and step names:
// never key ids, request values or secrets.
type Metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	steps     *prometheus.HistogramVec
	inflight  prometheus.Gauge
	nsm       prometheus.Histogram
	nsmFails  prometheus.Counter
	rotations prometheus.Counter
	panics    prometheus.Counter
	handler   http.Handler
	// stepObs are steps' children, looked up once: the three step names
	// are fixed, and every request observes them.
	stepObs map[string]prometheus.Observer
}

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
			Help:    "Whole KMS API request latency inside kmsproxyd, by operation.",
			Buckets: stepBuckets,
		}, []string{"operation"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kmsproxy_step_duration_seconds",
			Help:    "Latency of each step of a request: attestation (getting a document, reused or new), upstream (KMS call incl. retries), envelope (CiphertextForRecipient decrypt).",
			Buckets: stepBuckets,
		}, []string{"step"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kmsproxy_inflight_requests",
			Help: "KMS API requests being served now.",
		}),
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
	}
	reg.MustRegister(m.requests, m.duration, m.steps, m.inflight, m.nsm, m.nsmFails, m.rotations, m.panics,
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
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	m.stepObs = map[string]prometheus.Observer{}
	for _, step := range []string{stepAttestation, stepUpstream, stepEnvelope} {
		m.stepObs[step] = m.steps.WithLabelValues(step)
	}
	return m
}

func (m *Metrics) observeStep(step string, d time.Duration) {
	o, ok := m.stepObs[step]
	if !ok {
		o = m.steps.WithLabelValues(step)
	}
	o.Observe(d.Seconds())
}

func (m *Metrics) serveHTTP(w http.ResponseWriter, r *http.Request) { m.handler.ServeHTTP(w, r) }

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
