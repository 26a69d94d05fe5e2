// Package daemon composes the running phonebridge: the bridge and its
// control API. It also opens a single connector for CLI commands that run
// with no daemon (linking in-process).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/control"
	"github.com/phonebridge/phonebridge/config"
)

// StopTimeout keeps shutdown inside the 5 s systemd and operators expect.
const StopTimeout = 4500 * time.Millisecond

// ReadyMessage is logged once every connector has started and the
// control API listens.
const ReadyMessage = "phonebridge is running"

// SocketPath is the control API's unix socket under cfg's state_dir.
func SocketPath(cfg *config.Config) string {
	return filepath.Join(cfg.StateDir, "phonebridge.sock")
}

// Run runs the daemon until ctx ends, then stops within StopTimeout.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, version string) error {
	b, err := bridge.Open(cfg, log)
	if err != nil {
		return err
	}
	if err := b.Start(ctx); err != nil {
		stopCtx, cancel := context.WithTimeout(context.Background(), StopTimeout)
		defer cancel()
		return errors.Join(err, b.Stop(stopCtx))
	}
	srv, err := control.Listen(SocketPath(cfg), backend{b, version}, log)
	if err != nil {
		stopCtx, cancel := context.WithTimeout(context.Background(), StopTimeout)
		defer cancel()
		return errors.Join(fmt.Errorf("control socket: %w", err), b.Stop(stopCtx))
	}
	log.Info(ReadyMessage, "version", version, "database", cfg.Store.Path, "control", SocketPath(cfg))
	<-ctx.Done()
	log.Info("stopping", "within", StopTimeout)
	stopCtx, cancel := context.WithTimeout(context.Background(), StopTimeout)
	defer cancel()
	// The control API first: no new link may start while connectors stop.
	ctlCtx, ctlCancel := context.WithTimeout(stopCtx, StopTimeout/5)
	defer ctlCancel()
	return errors.Join(srv.Close(ctlCtx), b.Stop(stopCtx))
}

// backend is the bridge as the control API sees it.
type backend struct {
	*bridge.Bridge
	version string
}

func (b backend) Version() string { return b.version }

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
