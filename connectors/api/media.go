package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/phonebridge/phonebridge/bridge"
)

// mediaPath prefixes the URL of a stored attachment.
const mediaPath = "/v1/media/"

// mediaStore keeps attachments as files named by their content's SHA-256:
// the same bytes are stored once, and a name is a valid Media.Ref for as
// long as the file exists, across restarts.
type mediaStore struct {
	dir string
	max int64
}

// storedMedia is an outgoing attachment once stored.
type storedMedia struct {
	digest string
	mime   string // recorded for GET /v1/media's Content-Type
	size   int64
}

func newMediaStore(dir string, max int64) (*mediaStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create the media directory: %w", err)
	}
	return &mediaStore{dir: dir, max: max}, nil
}

// errTooLarge is returned by put for content over the limit.
var errTooLarge = errors.New("over max_media_bytes")

// put stores r's content, at most max bytes, and returns its digest and size.
func (s *mediaStore) put(r io.Reader) (digest string, size int64, err error) {
	tmp, err := os.CreateTemp(s.dir, ".incoming-*")
	if err != nil {
		return "", 0, fmt.Errorf("store an attachment: %w", err)
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, s.max+1))
	if err != nil {
		return "", 0, fmt.Errorf("store an attachment: %w", err)
	}
	if size > s.max {
		return "", size, errTooLarge
	}
	if err := tmp.Sync(); err != nil {
		return "", 0, fmt.Errorf("store an attachment: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", 0, fmt.Errorf("store an attachment: %w", err)
	}
	digest = hex.EncodeToString(h.Sum(nil))
	// Same name, same bytes: replacing an existing file is harmless.
	if err := os.Rename(tmp.Name(), filepath.Join(s.dir, digest)); err != nil {
		return "", 0, fmt.Errorf("store an attachment: %w", err)
	}
	tmp = nil
	return digest, size, nil
}

// validDigest accepts only what put names files, so a ref or URL can never
// reach outside the directory.
func validDigest(ref string) bool {
	if len(ref) != sha256.Size*2 {
		return false
	}
	for _, r := range ref {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return true
}

func (s *mediaStore) open(digest string) (*os.File, error) {
	if !validDigest(digest) {
		return nil, fs.ErrNotExist
	}
	return os.Open(filepath.Join(s.dir, digest))
}

// OpenMedia implements bridge.MediaOpener for attachments clients sent.
func (c *Connector) OpenMedia(ctx context.Context, m bridge.Media) (io.ReadCloser, error) {
	if !validDigest(m.Ref) {
		return nil, bridge.Permanentf("attachment ref %q is not one this connector made", m.Ref)
	}
	f, err := c.media.open(m.Ref)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, bridge.Permanentf("attachment %s is no longer stored", m.Ref)
	}
	return f, err
}

// storeOutgoing stores an outgoing event's attachments.
func (c *Connector) storeOutgoing(ctx context.Context, out *bridge.Outgoing) ([]storedMedia, error) {
	stored := make([]storedMedia, len(out.Media))
	for i, m := range out.Media {
		if m.Open == nil {
			return nil, bridge.Permanentf("attachment %d (%q) cannot be opened", i, m.Name)
		}
		r, err := m.Open(ctx)
		if err != nil {
			return nil, err
		}
		digest, size, err := c.media.put(r)
		r.Close()
		if errors.Is(err, errTooLarge) {
			return nil, bridge.Permanentf("attachment %q is over max_media_bytes (%d bytes)", m.Name, c.opts.MaxMediaBytes)
		}
		if err != nil {
			return nil, err
		}
		mime := m.MIME
		if mime == "" {
			mime = "application/octet-stream"
		}
		stored[i] = storedMedia{digest: digest, mime: mime, size: size}
	}
	return stored, nil
}
