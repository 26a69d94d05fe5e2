package bridge_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phonebridge/phonebridge/bridge"
)

func TestStateDirWritableByOthersIsRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := bridge.PrepareStateDir(dir); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("a new state_dir has mode %04o, want 0700", fi.Mode().Perm())
	}
	for _, mode := range []os.FileMode{0o777, 0o770, 0o702} {
		os.Chmod(dir, mode)
		err := bridge.PrepareStateDir(dir)
		if err == nil || !strings.Contains(err.Error(), "writable by others") || !strings.Contains(err.Error(), "chmod 700") {
			t.Errorf("mode %04o: %v, want a refusal saying how to fix it", mode, err)
		}
	}
	os.Chmod(dir, 0o750) // readable by a group is the operator's choice
	if err := bridge.PrepareStateDir(dir); err != nil {
		t.Errorf("mode 0750: %v", err)
	}
}
