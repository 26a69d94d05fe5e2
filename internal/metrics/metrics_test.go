package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
)

// fakeSource is a bridge as the metrics read it.
type fakeSource struct {
	store      *bridge.Store
	connectors []bridge.ConnectorReport
	queues     []bridge.QueueStatus
	failed     int
	outboxErr  error
}

func (f *fakeSource) Connectors() []bridge.ConnectorReport { return f.connectors }
func (f *fakeSource) Links() []bridge.LinkStatus {
	return []bridge.LinkStatus{{Name: "phone", State: bridge.LinkPhoneOffline}}
}
func (f *fakeSource) Outbox(context.Context) ([]bridge.QueueStatus, int, error) {
	return f.queues, f.failed, f.outboxErr
}
func (f *fakeSource) Store() *bridge.Store { return f.store }

func newSource(t *testing.T) *fakeSource {
	t.Helper()
	store, err := bridge.OpenStore(filepath.Join(t.TempDir(), "pb.db"), "normal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return &fakeSource{store: store, connectors: []bridge.ConnectorReport{
		{Name: "irc", Type: "irc", State: bridge.StateDisconnected},
		{Name: "phone", Type: "whatsapp", State: bridge.StateConnected},
	}}
}

// gather returns every sample as "name{labels} value" lines.
func gather(t *testing.T, s *Server) map[string]float64 {
	t.Helper()
	families, err := s.Registry("1.2.3").Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := f.GetName() + "{" + strings.Join(labels, ",") + "}"
			out[key] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return -1
}

func TestCountersAndScrapedGauges(t *testing.T) {
	src := newSource(t)
	src.queues = []bridge.QueueStatus{
		{Connector: "irc", Chat: "#a", Depth: 3, Oldest: time.Now().Add(-time.Minute)},
		{Connector: "irc", Chat: "#b", Depth: 2, Oldest: time.Now().Add(-10 * time.Second)},
	}
	src.failed = 4
	s := New(src, slog.New(slog.DiscardHandler))
	s.Accepted("phone", bridge.KindMessage)
	s.Accepted("phone", bridge.KindMessage)
	s.Accepted("phone", bridge.KindTyping)
	s.Delivered("irc", bridge.KindMessage, 20*time.Millisecond)
	s.DeliveryFailed("irc", bridge.KindMessage, bridge.FailRetry)
	s.DeliveryFailed("irc", bridge.KindMessage, bridge.FailPermanent)
	for _, st := range []bridge.State{bridge.StateConnecting, bridge.StateConnected, bridge.StateDisconnected, bridge.StateConnected, bridge.StateConnected} {
		s.StateChanged("irc", st)
	}
	got := gather(t, s)
	for key, want := range map[string]float64{
		"phonebridge_events_in_total{connector=phone,kind=message}":              2,
		"phonebridge_events_in_total{connector=phone,kind=typing}":               1,
		"phonebridge_events_out_total{connector=irc,kind=message}":               1,
		"phonebridge_send_duration_seconds{connector=irc}":                       1,
		"phonebridge_delivery_failures_total{connector=irc,reason=retry}":        1,
		"phonebridge_delivery_failures_total{connector=irc,reason=permanent}":    1,
		"phonebridge_reconnects_total{connector=irc}":                            2,
		"phonebridge_outbox_depth{connector=irc}":                                5,
		"phonebridge_outbox_depth{connector=phone}":                              0,
		"phonebridge_outbox_failed{}":                                            4,
		"phonebridge_outbox_readable{}":                                          1,
		"phonebridge_connector_state{connector=irc,state=disconnected,type=irc}": 1,
		"phonebridge_link_state{link=phone,state=phone_unreachable}":             1,
		"phonebridge_build_info{version=1.2.3}":                                  1,
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
	if age := got["phonebridge_outbox_oldest_age_seconds{connector=irc}"]; age < 59 || age > 120 {
		t.Errorf("oldest age %v, want about 60 s", age)
	}
	src.outboxErr = errors.New("database is locked")
	if got := gather(t, s); got["phonebridge_outbox_readable{}"] != 0 {
		t.Error("an unreadable outbox is not reported")
	}
}

func TestServeHealthAndReadiness(t *testing.T) {
	src := newSource(t)
	s, err := Start(config.Metrics{Listen: "127.0.0.1:0"}, src, "1.2.3", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + s.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "irc disconnected") {
		t.Errorf("/readyz with irc down: %d %q", code, body)
	}
	src.connectors[0].State = bridge.StateConnected
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz with everything connected: %d", code)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "phonebridge_connector_state{") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics: %d %.300q", code, body)
	}
	src.store.Close()
	if code, body := get("/healthz"); code != 503 || !strings.Contains(body, "database") {
		t.Errorf("/healthz with the database closed: %d %q", code, body)
	}
	if _, err := Start(config.Metrics{Listen: s.Addr().String()}, src, "1.2.3", slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "metrics.listen") {
		t.Errorf("a taken address: %v", err)
	}
}
