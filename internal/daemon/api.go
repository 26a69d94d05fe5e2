package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/control"
	"github.com/phonebridge/phonebridge/config"
)

// API is what the CLI's link commands need: the running daemon's, through
// its control socket, or, with no daemon, the connectors opened here.
type API interface {
	Links(ctx context.Context) ([]bridge.LinkStatus, error)
	Link(ctx context.Context, name string, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error)
	Unlink(ctx context.Context, name string, local bool) error
	Chats(ctx context.Context, name, search string) ([]bridge.ChatInfo, error)
	Close() error
}

// Connect returns the running daemon's API, or a local one when no daemon
// runs with cfg's state_dir; running says which.
func Connect(cfg *config.Config, log *slog.Logger) (api API, running bool, err error) {
	c, err := control.Dial(SocketPath(cfg))
	switch {
	case err == nil:
		return remote{c}, true, nil
	case errors.Is(err, control.ErrNotRunning):
		return &local{cfg: cfg, log: log, open: map[string]*Local{}}, false, nil
	}
	return nil, false, err
}

type remote struct{ *control.Client }

func (remote) Close() error { return nil }

// local drives connectors in this process, opening each on first use.
type local struct {
	cfg  *config.Config
	log  *slog.Logger
	open map[string]*Local
}

func (l *local) connector(name string) (bridge.Connector, error) {
	if lc, ok := l.open[name]; ok {
		return lc.Connector, nil
	}
	lc, err := OpenLocal(l.cfg, name, l.log)
	if err != nil {
		return nil, err
	}
	l.open[name] = lc
	return lc.Connector, nil
}

func (l *local) linker(name string) (bridge.Linker, error) {
	conn, err := l.connector(name)
	if err != nil {
		return nil, err
	}
	lk, ok := conn.(bridge.Linker)
	if !ok {
		return nil, fmt.Errorf("connector %q (type %s) does not link accounts", name, l.cfg.Connectors[name].Type)
	}
	return lk, nil
}

func (l *local) Links(ctx context.Context) ([]bridge.LinkStatus, error) {
	names := make([]string, 0, len(l.cfg.Connectors))
	for name := range l.cfg.Connectors {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []bridge.LinkStatus
	for _, name := range names {
		conn, err := l.connector(name)
		if err != nil {
			return nil, err
		}
		if lk, ok := conn.(bridge.Linker); ok {
			st := lk.LinkStatus()
			st.Name = name
			out = append(out, st)
		}
	}
	return out, nil
}

func (l *local) Link(ctx context.Context, name string, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
	lk, err := l.linker(name)
	if err != nil {
		return bridge.LinkAccount{}, err
	}
	return lk.Link(ctx, opts, progress)
}

func (l *local) Unlink(ctx context.Context, name string, localOnly bool) error {
	lk, err := l.linker(name)
	if err != nil {
		return err
	}
	return lk.Unlink(ctx, localOnly)
}

func (l *local) Chats(ctx context.Context, name, search string) ([]bridge.ChatInfo, error) {
	conn, err := l.connector(name)
	if err != nil {
		return nil, err
	}
	cl, ok := conn.(bridge.ChatLister)
	if !ok {
		return nil, fmt.Errorf("connector %q (type %s) cannot list its chats", name, l.cfg.Connectors[name].Type)
	}
	return cl.Chats(ctx, search)
}

func (l *local) Close() error {
	var errs []error
	for _, lc := range l.open {
		errs = append(errs, lc.Close())
	}
	return errors.Join(errs...)
}
