// Package metrics serves the bridge's Prometheus metrics, /healthz and
// /readyz on the optional metrics.listen address. Counters come from the
// core as it works (bridge.Observer); the outbox and the links' states are
// read when Prometheus scrapes, so nothing runs between scrapes.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
)

// Source is what the metrics read from the running bridge at scrape time.
type Source interface {
	Connectors() []bridge.ConnectorReport
	Links() []bridge.LinkStatus
	Outbox(ctx context.Context) ([]bridge.QueueStatus, int, error)
	Store() *bridge.Store
}

// Server is the metrics endpoint; it is also the bridge's Observer.
type Server struct {
	log *slog.Logger
	src Source
	ln  net.Listener
	srv *http.Server

	in        *prometheus.CounterVec
	out       *prometheus.CounterVec
	failures  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	reconnect *prometheus.CounterVec

	mu        sync.Mutex
	connected map[string]bool // connectors that were connected once
	served    chan struct{}
}

var _ bridge.Observer = (*Server)(nil)

// New builds the metrics for src; Start serves them.
func New(src Source, log *slog.Logger) *Server {
	s := &Server{
		log: log, src: src, connected: map[string]bool{},
		in: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phonebridge_events_in_total", Help: "Inbound events accepted, by origin connector and kind.",
		}, []string{"connector", "kind"}),
		out: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phonebridge_events_out_total", Help: "Events delivered (one per Send), by destination connector and kind.",
		}, []string{"connector", "kind"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phonebridge_delivery_failures_total",
			Help: "Failed delivery attempts by destination connector and reason: retry, rate_limited, permanent, gave_up.",
		}, []string{"connector", "reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "phonebridge_send_duration_seconds", Help: "How long one successful Send took, by destination connector.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"connector"}),
		reconnect: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phonebridge_reconnects_total", Help: "Times a connector came back to connected after having been connected.",
		}, []string{"connector"}),
	}
	return s
}

// Registry returns a registry with the bridge's metrics, the Go runtime's
// and the process's.
func (s *Server) Registry(version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.in, s.out, s.failures, s.latency, s.reconnect, scrapeCollector{s},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "phonebridge_build_info", Help: "Always 1; the version is a label.", ConstLabels: prometheus.Labels{"version": version},
		}, func() float64 { return 1 }))
	return reg
}

// Start listens on cfg.Listen and serves /metrics, /healthz and /readyz.
func Start(cfg config.Metrics, src Source, version string, log *slog.Logger) (*Server, error) {
	s := New(src, log)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.Registry(version), promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("/healthz", s.healthz)
	mux.HandleFunc("/readyz", s.readyz)
	s.ln, s.served = ln, make(chan struct{})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("the metrics endpoint stopped serving", "err", err)
		}
	}()
	log.Info("metrics listening", "address", ln.Addr().String())
	return s, nil
}

// Addr is where it listens.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops serving within ctx.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	<-s.served
	return err
}

// healthz answers 200 while the process and its database answer.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var one int
	if err := s.src.Store().QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		http.Error(w, "unhealthy: the database does not answer: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// readyz answers 200 when every connector is connected, 503 naming those
// that are not.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	var waiting []string
	for _, c := range s.src.Connectors() {
		if c.State != bridge.StateConnected {
			waiting = append(waiting, c.Name+" "+string(c.State))
		}
	}
	if len(waiting) > 0 {
		http.Error(w, "not ready: "+strings.Join(waiting, ", "), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// Accepted implements bridge.Observer.
func (s *Server) Accepted(connector string, kind bridge.Kind) {
	s.in.WithLabelValues(connector, string(kind)).Inc()
}

// Delivered implements bridge.Observer.
func (s *Server) Delivered(connector string, kind bridge.Kind, took time.Duration) {
	s.out.WithLabelValues(connector, string(kind)).Inc()
	s.latency.WithLabelValues(connector).Observe(took.Seconds())
}

// DeliveryFailed implements bridge.Observer.
func (s *Server) DeliveryFailed(connector string, kind bridge.Kind, reason string) {
	s.failures.WithLabelValues(connector, reason).Inc()
}

// StateChanged implements bridge.Observer: a connector connected again
// after it had been counts as a reconnect.
func (s *Server) StateChanged(connector string, state bridge.State) {
	if state != bridge.StateConnected {
		return
	}
	s.mu.Lock()
	again := s.connected[connector]
	s.connected[connector] = true
	s.mu.Unlock()
	if again {
		s.reconnect.WithLabelValues(connector).Inc()
	}
}

// scrapeCollector reads what the bridge keeps (the outbox, the states)
// at scrape time.
type scrapeCollector struct{ s *Server }

var (
	descDepth = prometheus.NewDesc("phonebridge_outbox_depth",
		"Deliveries waiting in the outbox, by destination connector.", []string{"connector"}, nil)
	descOldest = prometheus.NewDesc("phonebridge_outbox_oldest_age_seconds",
		"Age of the oldest waiting delivery, by destination connector.", []string{"connector"}, nil)
	descFailed = prometheus.NewDesc("phonebridge_outbox_failed",
		"Deliveries that failed for good and were skipped.", nil, nil)
	descState = prometheus.NewDesc("phonebridge_connector_state",
		"1 for each connector's current state.", []string{"connector", "type", "state"}, nil)
	descLink = prometheus.NewDesc("phonebridge_link_state",
		"1 for each link's current state (unlinked, connected, logged_out, ...).", []string{"link", "state"}, nil)
	descUp = prometheus.NewDesc("phonebridge_outbox_readable",
		"1 when the outbox could be read for this scrape.", nil, nil)
)

func (c scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDepth, descOldest, descFailed, descState, descLink, descUp} {
		ch <- d
	}
}

func (c scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.s.src.Connectors() {
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, 1, r.Name, r.Type, string(r.State))
	}
	for _, l := range c.s.src.Links() {
		ch <- prometheus.MustNewConstMetric(descLink, prometheus.GaugeValue, 1, l.Name, string(l.State))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	queues, failed, err := c.s.src.Outbox(ctx)
	if err != nil {
		c.s.log.Warn("metrics: cannot read the outbox", "err", err)
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 1)
	depth, oldest := map[string]int{}, map[string]time.Time{}
	for _, r := range c.s.src.Connectors() {
		depth[r.Name] = 0 // an empty outbox shows as 0, not as no series
	}
	for _, q := range queues {
		depth[q.Connector] += q.Depth
		if o, ok := oldest[q.Connector]; !ok || q.Oldest.Before(o) {
			oldest[q.Connector] = q.Oldest
		}
	}
	for conn, n := range depth {
		ch <- prometheus.MustNewConstMetric(descDepth, prometheus.GaugeValue, float64(n), conn)
		age := 0.0
		if o, ok := oldest[conn]; ok {
			age = time.Since(o).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, age, conn)
	}
	ch <- prometheus.MustNewConstMetric(descFailed, prometheus.GaugeValue, float64(failed))
}
