package logging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestJSONAndLevel(t *testing.T) {
	var buf bytes.Buffer
	log, err := New("warn", "json", &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown", "connector", "chat-api")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON line: %q", buf.String())
	}
	if line["msg"] != "shown" || line["connector"] != "chat-api" || line["level"] != "WARN" {
		t.Errorf("got %v", line)
	}
}

func TestBadLevelAndFormatAreNamed(t *testing.T) {
	if _, err := New("loud", "text", &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), `"loud"`) {
		t.Errorf("bad level: %v", err)
	}
	if _, err := New("info", "xml", &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), `"xml"`) {
		t.Errorf("bad format: %v", err)
	}
}

// Under systemd with the journal on stderr, lines carry no time of their
// own: journald stamps them.
func TestNoTimeInTheJournal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "journal")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	st := fi.Sys().(*syscall.Stat_t)
	for _, c := range []struct {
		stream   string
		wantTime bool
	}{
		{"", true},
		{"1:2", true}, // the journal is some other stream
		{fmt.Sprintf("%d:%d", st.Dev, st.Ino), false},
	} {
		t.Setenv("JOURNAL_STREAM", c.stream)
		f.Truncate(0)
		f.Seek(0, 0)
		log, err := New("info", "text", f)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("hello")
		data, _ := os.ReadFile(f.Name())
		if got := strings.Contains(string(data), "time="); got != c.wantTime {
			t.Errorf("JOURNAL_STREAM=%q: %q, want time %v", c.stream, data, c.wantTime)
		}
	}
}
