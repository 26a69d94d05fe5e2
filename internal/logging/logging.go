// Package logging builds the daemon's slog logger from the config and the
// command line.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
)

// New returns a logger writing to w at level ("debug", "info", "warn",
// "error") in format ("text" or "json").
func New(level, format string, w io.Writer) (*slog.Logger, error) {
	lv, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	var v slog.LevelVar
	v.Set(lv)
	return NewLeveled(&v, format, w)
}

// ParseLevel reads a level as the config and the command line name it.
func ParseLevel(level string) (slog.Level, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return 0, fmt.Errorf("log level %q is not one of debug, info, warn, error", level)
	}
	return lv, nil
}

// NewLeveled is New at a level that can change while the logger is in
// use (a reload of the config sets it).
func NewLeveled(level *slog.LevelVar, format string, w io.Writer) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	if toJournal(w) {
		// journald stamps each line itself; a second time is noise.
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		}
	}
	switch format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q is not text or json", format)
}

// toJournal reports whether w is the stream systemd connected to the
// journal: $JOURNAL_STREAM names its device and inode ("dev:ino").
func toJournal(w io.Writer) bool {
	f, ok := w.(*os.File)
	stream := os.Getenv("JOURNAL_STREAM")
	if !ok || stream == "" {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && stream == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}
