package daemontest

import (
	"context"
	"log/slog"

	"github.com/phonebridge/phonebridge/internal/daemon"
)

// OnReady wraps h so that ready is called each time an in-process daemon
// (daemon.Run) logs that it runs.
func OnReady(h slog.Handler, ready func()) slog.Handler { return readyHandler{h, ready} }

type readyHandler struct {
	slog.Handler
	ready func()
}

func (h readyHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == daemon.ReadyMessage {
		h.ready()
	}
	return h.Handler.Handle(ctx, r)
}

func (h readyHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return readyHandler{h.Handler.WithAttrs(as), h.ready}
}

func (h readyHandler) WithGroup(name string) slog.Handler {
	return readyHandler{h.Handler.WithGroup(name), h.ready}
}
