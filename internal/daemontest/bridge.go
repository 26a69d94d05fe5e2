package daemontest

import (
	"log/slog"
	"os"
	"testing"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
)

// OpenBridge opens, but does not start, a bridge in this process on the
// config at path. It logs nothing unless the environment variable
// showLogs is set, then everything at debug to stderr.
func OpenBridge(t testing.TB, path, showLogs string) *bridge.Bridge {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if os.Getenv(showLogs) != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	b, err := bridge.Open(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
