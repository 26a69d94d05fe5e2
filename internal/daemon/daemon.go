// Package daemon composes the running phonebridge: the bridge and its
// control API. It also opens a single connector for CLI commands that run
// with no daemon (linking in-process).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/control"
	"github.com/phonebridge/phonebridge/config"
	"github.com/phonebridge/phonebridge/internal/logging"
	"github.com/phonebridge/phonebridge/internal/mediaserver"
	"github.com/phonebridge/phonebridge/internal/metrics"
	"github.com/phonebridge/phonebridge/internal/sdnotify"
	"github.com/phonebridge/phonebridge/internal/webui"
)

// StopTimeout keeps shutdown inside the 5 s systemd and operators expect.
const StopTimeout = 4500 * time.Millisecond

// Option adjusts how Run runs the daemon.
type Option func(*daemon)

// WithLogLevel hands Run the level of its logger, which a reload sets to
// the config's log.level. Without it (the command line fixed the level)
// a changed log.level waits for the next start.
func WithLogLevel(level *slog.LevelVar) Option {
	return func(d *daemon) { d.logLevel = level }
}

// ReadyMessage is logged once every connector has started and the
// control API listens.
const ReadyMessage = "phonebridge is running"

// SocketPath is the control API's unix socket under cfg's state_dir.
func SocketPath(cfg *config.Config) string {
	return filepath.Join(cfg.StateDir, "phonebridge.sock")
}

// Run runs the daemon until ctx ends, then stops within StopTimeout.
// SIGHUP reloads the config, as `phonebridge reload` does. Under systemd
// (Type=notify) it reports READY, STATUS, RELOADING, STOPPING and, when
// the unit sets WatchdogSec, watchdog pings.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, version string, opts ...Option) error {
	notify, err := sdnotify.New()
	if err != nil {
		log.Warn("cannot talk to systemd; running without its notifications", "err", err)
		notify = &sdnotify.Notifier{}
	}
	defer notify.Close()
	var bridgeOpts []bridge.Option
	var media *mediaserver.Server
	if cfg.Media.PublicURL != "" {
		if media, err = mediaserver.Start(cfg.Media, cfg.StateDir, log); err != nil {
			return err
		}
		bridgeOpts = append(bridgeOpts, bridge.WithMedia(media)) // never a nil *Server in the interface
	}
	b, err := bridge.Open(cfg, log, bridgeOpts...)
	if err != nil {
		return errors.Join(err, closeMedia(context.Background(), media))
	}
	d := &daemon{Bridge: b, cfg: cfg, log: log, version: version, started: time.Now(), notify: notify}
	for _, opt := range opts {
		opt(d)
	}
	// The observer is set before Start, so the first events count.
	obs := statusObserver{Observer: bridge.NopObserver{}, d: d}
	var mets *metrics.Server
	if cfg.Metrics.Listen != "" {
		if mets, err = metrics.Start(cfg.Metrics, b, version, log); err != nil {
			stopCtx, cancel := context.WithTimeout(context.Background(), StopTimeout)
			defer cancel()
			return errors.Join(err, b.Stop(stopCtx), closeMedia(stopCtx, media))
		}
		obs.Observer = mets
	}
	b.SetObserver(obs)
	if err := b.Start(ctx); err != nil {
		stopCtx, cancel := context.WithTimeout(context.Background(), StopTimeout)
		defer cancel()
		return errors.Join(err, b.Stop(stopCtx), closeMetrics(stopCtx, mets), closeMedia(stopCtx, media))
	}
	srv, err := control.Listen(SocketPath(cfg), d, log)
	if err != nil {
		stopCtx, cancel := context.WithTimeout(context.Background(), StopTimeout)
		defer cancel()
		return errors.Join(fmt.Errorf("control socket: %w", err), b.Stop(stopCtx), closeMetrics(stopCtx, mets), closeMedia(stopCtx, media))
	}
	web, err := webui.Start(cfg.Web, cfg.StateDir, b, log) // nil when web.listen is empty
	if err != nil {
		stopCtx, cancel := context.WithTimeout(context.Background(), StopTimeout)
		defer cancel()
		return errors.Join(err, srv.Close(stopCtx), b.Stop(stopCtx), closeMetrics(stopCtx, mets), closeMedia(stopCtx, media))
	}
	log.Info(ReadyMessage, "version", version, "database", cfg.Store.Path, "control", SocketPath(cfg))
	notify.Ready(d.statusLine())
	watchdogDone := d.watchdog(ctx)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-hup:
			d.Reload(ctx) // it logs what it did
		}
	}
	log.Info("stopping", "within", StopTimeout)
	notify.Stopping("stopping")
	<-watchdogDone
	stopCtx, cancel := context.WithTimeout(context.Background(), StopTimeout)
	defer cancel()
	ctlCtx, ctlCancel := context.WithTimeout(stopCtx, StopTimeout/5)
	defer ctlCancel()
	// The control socket and the web page first: no new link may start
	// while connectors stop. The media server last: connectors may
	// publish while they stop.
	return errors.Join(srv.Close(ctlCtx), web.Close(ctlCtx), b.Stop(stopCtx), closeMetrics(stopCtx, mets), closeMedia(stopCtx, media))
}

// closeMetrics stops the metrics endpoint, if one runs.
func closeMetrics(ctx context.Context, m *metrics.Server) error {
	if m == nil {
		return nil
	}
	return m.Close(ctx)
}

// closeMedia stops the media server, if one runs.
func closeMedia(ctx context.Context, m *mediaserver.Server) error {
	if m == nil {
		return nil
	}
	return m.Close(ctx)
}

// daemon is the running bridge as the control API sees it.
type daemon struct {
	*bridge.Bridge
	log     *slog.Logger
	version string
	started time.Time
	notify  *sdnotify.Notifier

	logLevel *slog.LevelVar // nil: not the config's to change

	mu  sync.Mutex // one reload at a time; guards cfg
	cfg *config.Config
}

func (d *daemon) Version() string { return d.version }

// Status implements control.Backend.
func (d *daemon) Status(ctx context.Context) (control.StatusReport, error) {
	d.mu.Lock()
	path := d.cfg.Path
	d.mu.Unlock()
	queues, failed, err := d.Outbox(ctx)
	if err != nil {
		return control.StatusReport{}, err
	}
	return control.StatusReport{
		Version: d.version, Started: d.started, Config: path,
		Connectors: d.Connectors(), Links: d.Links(), Outbox: queues, Failed: failed,
	}, nil
}

// Reload implements control.Backend: the config file is read again and,
// if it has no problems, applied. The outcome is logged.
func (d *daemon) Reload(ctx context.Context) (rep control.ReloadReport, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	defer func() { d.logReload(rep, err) }()
	if d.cfg.Path == "" {
		return control.ReloadReport{}, errors.New("the running config did not come from a file; nothing to read again")
	}
	d.notify.Reloading()
	defer func() { d.notify.Ready(d.statusLine()) }()
	cfg, err := config.Load(d.cfg.Path)
	if err != nil {
		return control.ReloadReport{}, err
	}
	res, err := d.Bridge.Reload(ctx, cfg)
	rep = control.ReloadReport{Config: cfg.Path, Added: res.Added, Restarted: res.Restarted, Removed: res.Removed,
		Ignored: res.Ignored}
	if !res.Applied {
		return control.ReloadReport{}, err // refused before anything changed
	}
	if d.logLevel != nil && cfg.Log.Level != d.cfg.Log.Level {
		// Validated with the rest of the config, so it parses.
		if lv, perr := logging.ParseLevel(cfg.Log.Level); perr == nil {
			d.logLevel.Set(lv)
			rep.Ignored = slices.DeleteFunc(rep.Ignored, func(path string) bool { return path == "log.level" })
		}
	}
	d.cfg = cfg
	return rep, err
}

// logReload says in one line what a SIGHUP did.
func (d *daemon) logReload(rep control.ReloadReport, err error) {
	var problems *config.Problems
	switch {
	case errors.As(err, &problems):
		d.log.Error("config not reloaded: it has problems; the running config stays", "problems", problems.Error())
	case err != nil && rep.Config == "":
		d.log.Error("config not reloaded; the running config stays", "err", err)
	default:
		attrs := []any{"config", rep.Config, "added", rep.Added, "restarted", rep.Restarted, "removed", rep.Removed}
		if len(rep.Ignored) > 0 {
			attrs = append(attrs, "apply_at_next_start", rep.Ignored)
		}
		if err != nil {
			d.log.Error("config reloaded in part", append(attrs, "err", err)...)
			return
		}
		d.log.Info("config reloaded", attrs...)
	}
}

// statusObserver keeps systemd's status line current as connectors
// change state, passing everything on to the metrics (if any).
type statusObserver struct {
	bridge.Observer
	d *daemon
}

func (o statusObserver) StateChanged(connector string, state bridge.State) {
	o.Observer.StateChanged(connector, state)
	o.d.notify.Status(o.d.statusLine())
}

// statusLine is the one line `systemctl status` shows.
func (d *daemon) statusLine() string {
	var parts []string
	for _, c := range d.Connectors() {
		parts = append(parts, c.Name+" "+string(c.State))
	}
	return "connectors: " + strings.Join(parts, ", ")
}

// watchdog pings systemd while the store answers, when the unit asks
// for pings; a bridge whose database hangs is restarted. The returned
// channel closes when it has stopped.
func (d *daemon) watchdog(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	every, on, err := sdnotify.WatchdogInterval()
	if err != nil {
		d.log.Warn("systemd's watchdog setting is unreadable; not pinging it", "err", err)
	}
	if !on || !d.notify.Enabled() {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			check, cancel := context.WithTimeout(ctx, every)
			var one int
			err := d.Store().QueryRowContext(check, "SELECT 1").Scan(&one)
			cancel()
			if err != nil {
				d.log.Error("the database does not answer; not pinging systemd's watchdog", "err", err)
				continue
			}
			d.notify.Watchdog()
		}
	}()
	return done
}

// Local is one connector opened without a daemon, for a CLI command.
type Local struct {
	Connector bridge.Connector
	store     *bridge.Store
}

// OpenLocal builds the named connector alone on the bridge's store. The
// caller must Close it.
func OpenLocal(cfg *config.Config, name string, log *slog.Logger) (*Local, error) {
	cc, ok := cfg.Connectors[name]
	if !ok {
		return nil, fmt.Errorf("no connector called %q in %s", name, cfg.Path)
	}
	t, ok := bridge.LookupType(cc.Type)
	if !ok {
		return nil, fmt.Errorf("connectors.%s.type: connector type %q is not built into this phonebridge", name, cc.Type)
	}
	if err := bridge.PrepareStateDir(cfg.StateDir); err != nil {
		return nil, err
	}
	store, err := bridge.OpenStore(cfg.Store.Path, cfg.Store.Sync)
	if err != nil {
		return nil, err
	}
	conn, err := t.New(bridge.NewEnv(cfg, name, store, log), cc.Options)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("connector %s: %w", name, err)
	}
	return &Local{Connector: conn, store: store}, nil
}

// Close releases the connector and the store.
func (l *Local) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), StopTimeout)
	defer cancel()
	return errors.Join(l.Connector.Stop(ctx), l.store.Close())
}
