package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/bridgetest"
	"github.com/phonebridge/phonebridge/config"
)

// reloadFake is a registered connector type for reload tests: each build
// is a new bridgetest.Fake, noted under its connector name.
type reloadOptions struct {
	Tag string `yaml:"tag"`
}

type reloadConn struct {
	*bridgetest.Fake
	stopped atomic.Bool
}

func (c *reloadConn) Stop(ctx context.Context) error {
	c.stopped.Store(true)
	return nil
}

var (
	registerReload sync.Once
	reloadMu       sync.Mutex
	reloadBuilt    = map[string][]*reloadConn{}
)

func reloadType() {
	registerReload.Do(func() {
		bridge.Register(bridge.ConnectorType{
			Name:       "reloadfake",
			NewOptions: func() any { return &reloadOptions{} },
			New: func(env bridge.Env, opts any) (bridge.Connector, error) {
				if opts.(*reloadOptions).Tag == "broken" {
					return nil, errors.New("cannot be built")
				}
				c := &reloadConn{Fake: bridgetest.NewFake(env.Name, all)}
				reloadMu.Lock()
				reloadBuilt[env.Name] = append(reloadBuilt[env.Name], c)
				reloadMu.Unlock()
				return c, nil
			},
		})
	})
}

// built returns the connectors built for name so far, oldest first.
func built(name string) []*reloadConn {
	reloadMu.Lock()
	defer reloadMu.Unlock()
	return slices.Clone(reloadBuilt[name])
}

func reloadConfig(t *testing.T, dir, connectors, routes string) *config.Config {
	t.Helper()
	yaml := fmt.Sprintf("state_dir: %s\ndelivery: {retry_min: 10ms, retry_max: 50ms}\nconnectors:\n%sroutes:\n%s", dir, connectors, routes)
	cfg, err := config.Parse([]byte(yaml), filepath.Join(dir, "phonebridge.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestReload: a changed connector restarts with its new options and gets
// what waited for it, an unchanged one keeps running untouched, a removed
// one stops, an added one starts; routes change at once; a config whose
// connector cannot be built is refused with the running one kept.
func TestReload(t *testing.T) {
	reloadType()
	// A run before this one (-count) built fakes under the same names.
	reloadMu.Lock()
	clear(reloadBuilt)
	reloadMu.Unlock()
	dir := t.TempDir()
	// Names unique to this test: the registry of built fakes is global.
	cfg := reloadConfig(t, dir,
		"  rl-a: {type: reloadfake, tag: one}\n  rl-b: {type: reloadfake, tag: one}\n  rl-c: {type: reloadfake, tag: one}\n",
		"  - {name: ab, endpoints: [{connector: rl-a, chat: x}, {connector: rl-b, chat: y}]}\n")
	b, err := bridge.Open(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b.Stop(ctx)
	})
	a, oldB := built("rl-a")[0], built("rl-b")[0]
	oldB.FailWith(func(*bridge.Outgoing) error { return errors.New("down") })
	if err := a.Inject(t.Context(), msg("rl-a", "x", "1", "waits for the new rl-b")); err != nil {
		t.Fatal(err)
	}

	// Refused: nothing changes.
	broken := reloadConfig(t, dir,
		"  rl-a: {type: reloadfake, tag: one}\n  rl-b: {type: reloadfake, tag: broken}\n",
		"  - {name: ab, endpoints: [{connector: rl-a, chat: x}, {connector: rl-b, chat: y}]}\n")
	if res, err := b.Reload(t.Context(), broken); err == nil || res.Applied {
		t.Fatal("a config whose connector cannot be built was applied")
	}
	if len(built("rl-b")) != 1 || oldB.stopped.Load() || built("rl-c")[0].stopped.Load() {
		t.Fatal("a refused reload stopped or replaced connectors")
	}

	next := reloadConfig(t, dir,
		"  rl-a: {type: reloadfake, tag: one}\n  rl-b: {type: reloadfake, tag: two}\n  rl-d: {type: reloadfake, tag: one}\n",
		"  - {name: ab, endpoints: [{connector: rl-a, chat: x}, {connector: rl-b, chat: y}]}\n"+
			"  - {name: ad, endpoints: [{connector: rl-a, chat: x}, {connector: rl-d, chat: z}]}\n")
	res, err := b.Reload(t.Context(), next)
	if err != nil || !res.Applied {
		t.Fatal(res, err)
	}
	if fmt.Sprint(res.Added, res.Restarted, res.Removed) != "[rl-d] [rl-b] [rl-c]" {
		t.Errorf("reload added %v, restarted %v, removed %v; want [rl-d] [rl-b] [rl-c]", res.Added, res.Restarted, res.Removed)
	}
	if len(built("rl-a")) != 1 || a.stopped.Load() {
		t.Error("the unchanged connector was rebuilt or stopped")
	}
	if !oldB.stopped.Load() || !built("rl-c")[0].stopped.Load() {
		t.Error("the changed or removed connector was not stopped")
	}
	newB := built("rl-b")[1]
	if got := newB.WaitSent(t, 1); got[0].Text != "waits for the new rl-b" {
		t.Errorf("the restarted connector got %q", got[0].Text)
	}
	if err := a.Inject(t.Context(), msg("rl-a", "x", "2", "to both")); err != nil {
		t.Fatal(err)
	}
	if got := built("rl-d")[0].WaitSent(t, 1); got[0].Text != "to both" || got[0].Chat.ID != "z" {
		t.Errorf("the added connector's new route carried %+v", got[0])
	}
	if st := b.Status(); st["rl-c"].State != "" || st["rl-d"].State != bridge.StateConnected {
		t.Errorf("status after the reload: rl-c %q (want gone), rl-d %q", st["rl-c"].State, st["rl-d"].State)
	}
}
