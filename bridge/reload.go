package bridge

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"

	"github.com/phonebridge/phonebridge/config"
)

// ReloadResult says what a reload changed.
type ReloadResult struct {
	Added, Restarted, Removed []string // connectors, by name
	// Ignored lists settings that changed but apply only at the next
	// start (their YAML paths).
	Ignored []string
	// Applied is false when the reload was refused and nothing changed.
	Applied bool
}

// Reload applies a new, validated config to the running bridge: routes and
// notices at once; a connector whose section changed is stopped and
// started again with its new options, an added one started, a removed one
// stopped. Connectors whose section is the same keep running untouched,
// so a WhatsApp link is not dropped by an unrelated change. Nothing queued
// is lost: a removed connector's deliveries wait in the outbox for it to
// come back, a restarted one's resume once it runs again.
//
// New connectors are built before anything is stopped, so a connector
// that cannot be built refuses the whole reload and the running config
// stays. A restarted or added connector that then fails to start is
// reported in the error; the rest of the reload stands.
func (b *Bridge) Reload(ctx context.Context, cfg *config.Config) (ReloadResult, error) {
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	old := b.cfg.Load()
	var res ReloadResult
	res.Ignored = restartOnly(old, cfg)

	cur := b.conns()
	next := maps.Clone(cur.conns)
	built := map[string]Connector{}
	for _, name := range slices.Sorted(maps.Keys(cfg.Connectors)) {
		if sameConnector(old.Connectors[name], cfg.Connectors[name]) {
			continue
		}
		if b.build == nil {
			return ReloadResult{}, fmt.Errorf("connectors.%s changed, but this bridge was given its connectors and cannot rebuild them", name)
		}
		conn, err := b.build(cfg, name)
		if err != nil {
			return ReloadResult{}, err
		}
		built[name] = conn
		if _, ok := cur.conns[name]; ok {
			res.Restarted = append(res.Restarted, name)
		} else {
			res.Added = append(res.Added, name)
		}
	}
	for _, name := range cur.names {
		if _, ok := cfg.Connectors[name]; !ok {
			res.Removed = append(res.Removed, name)
		}
	}

	// Stop what goes, then swap the set, then start what comes: deliveries
	// meanwhile fail transiently and are retried with the new connector.
	var errs []error
	for _, name := range append(slices.Clone(res.Removed), res.Restarted...) {
		if sc, ok := b.takeStarted(name); ok {
			if err := b.stopOne(ctx, sc); err != nil {
				errs = append(errs, err)
			}
		}
		delete(next, name)
	}
	maps.Copy(next, built)
	b.set.Store(newConnSet(next))
	res.Applied = true
	b.noticesTo.Store(&Endpoint{cfg.Notices.Connector, cfg.Notices.Chat})
	b.cfg.Store(cfg)
	b.resolveMu.Lock()
	b.routes = cfg.Routes
	b.resolveMu.Unlock()
	// Routes resolve before new connectors run, as at Start.
	if err := b.resolveRoutes(ctx); err != nil {
		errs = append(errs, err)
	}
	for _, name := range slices.Sorted(maps.Keys(built)) {
		if err := b.startConnector(ctx, name, built[name]); err != nil {
			errs = append(errs, err)
			continue
		}
		b.del.resume(name, "")
	}
	b.mu.Lock()
	for _, name := range res.Removed {
		delete(b.states, name)
	}
	b.mu.Unlock()
	return res, errors.Join(errs...)
}

// takeStarted removes name from the started connectors and returns it.
func (b *Bridge) takeStarted(name string) (startedConn, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, sc := range b.started {
		if sc.name == name {
			b.started = slices.Delete(b.started, i, i+1)
			return sc, true
		}
	}
	return startedConn{}, false
}

// sameConnector reports whether a connector's section is unchanged.
func sameConnector(a, b *config.Connector) bool {
	return a != nil && b != nil && a.Type == b.Type && reflect.DeepEqual(a.Options, b.Options)
}

// restartOnly lists the settings that differ and that the running
// process keeps until it starts again.
func restartOnly(old, cfg *config.Config) []string {
	var out []string
	for _, c := range []struct {
		path     string
		old, new any
	}{
		{"state_dir", old.StateDir, cfg.StateDir},
		{"store", old.Store, cfg.Store},
		{"delivery", old.Delivery, cfg.Delivery},
		{"relay", old.Relay, cfg.Relay},
		// The daemon's own: it starts them once (the log level it may set
		// itself, and then drops from this list).
		{"log.level", old.Log.Level, cfg.Log.Level},
		{"log.format", old.Log.Format, cfg.Log.Format},
		{"web", old.Web, cfg.Web},
		{"metrics", old.Metrics, cfg.Metrics},
		{"media", old.Media, cfg.Media},
	} {
		if !reflect.DeepEqual(c.old, c.new) {
			out = append(out, c.path)
		}
	}
	return out
}
