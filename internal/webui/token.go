package webui

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// tokenFile is where a generated token is kept, under the state_dir.
const tokenFile = "web.token"

// minTokenLength matches what config accepts for web.token.
const minTokenLength = 16

// loadToken returns the configured token, else the one kept in
// stateDir/web.token, generating that file (0600) on first use so the
// operator can read it and it survives restarts.
func loadToken(configured, stateDir string, log *slog.Logger) (string, error) {
	if configured != "" {
		return configured, nil
	}
	path := filepath.Join(stateDir, tokenFile)
	if t, err := readToken(path); !errors.Is(err, fs.ErrNotExist) {
		return t, err
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return "", fmt.Errorf("web token: create the state directory: %w", err)
	}
	// rand.Text is 26 base32 characters: 130 random bits.
	token := rand.Text()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		// Another process wrote it first: theirs is the token.
		return readToken(path)
	}
	if err != nil {
		return "", fmt.Errorf("web token: %w", err)
	}
	_, err = f.WriteString(token + "\n")
	if err = errors.Join(err, f.Sync(), f.Close()); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("web token: write %s: %w", path, err)
	}
	log.Info("web page token generated; find it in " + path)
	return token, nil
}

// readToken reads a kept token; fs.ErrNotExist passes through unwrapped
// so the caller can tell a missing file from a bad one.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if err != nil {
		return "", fmt.Errorf("web token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if len(t) < minTokenLength {
		return "", fmt.Errorf("web token: %s holds fewer than %d characters; delete it to have a new token generated", path, minTokenLength)
	}
	return t, nil
}
