package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"

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

// noLink is the error for a name that is not a link, worded as the
// daemon's control API words it.
func noLink(name string) error {
	return fmt.Errorf("no link called %q; `phonebridge links` lists them", name)
}

func (l *local) connector(name string) (bridge.Connector, error) {
	if lc, ok := l.open[name]; ok {
		return lc.Connector, nil
	}
	if _, ok := l.cfg.Connectors[name]; !ok {
		return nil, noLink(name)
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
		return nil, noLink(name)
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

// Link links in this process, checking and reporting as the daemon's
// control API does, so the CLI behaves the same with or without a daemon.
func (l *local) Link(ctx context.Context, name string, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
	lk, err := l.linker(name)
	if err != nil {
		return bridge.LinkAccount{}, err
	}
	if opts.Phone != "" {
		if opts.Phone, err = control.NormalizePhone(opts.Phone); err != nil {
			return bridge.LinkAccount{}, err
		}
	}
	if progress == nil {
		progress = func(bridge.LinkProgress) {}
	}
	acct, err := lk.Link(ctx, opts, progress)
	if err == nil {
		return acct, nil
	}
	var le *bridge.LinkError
	switch {
	case errors.As(err, &le):
		le = &bridge.LinkError{Reason: le.Reason, Service: le.Service, Cause: oneLine(le.Cause), Account: le.Account}
	case ctx.Err() != nil:
		le = &bridge.LinkError{Reason: bridge.LinkCancelled}
	default:
		le = &bridge.LinkError{Reason: bridge.LinkFailed, Cause: oneLine(err.Error())}
	}
	return bridge.LinkAccount{}, le
}

// oneLine keeps an error one line, whatever a connector put in it.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
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
		if _, isLink := conn.(bridge.Linker); isLink {
			return nil, fmt.Errorf("link %q cannot list its chats", name)
		}
		return nil, noLink(name)
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
