package mediaserver

import (
	"container/heap"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/phonebridge/phonebridge/bridge"
)

// On disk, state_dir/media holds per file its bytes as {id} and its
// metadata as {id}.json. Both are written under tmpPrefix and renamed into
// place, the metadata last: a file is only served once its metadata
// exists, and Start deletes bytes without metadata and leftover temp
// files, so a crash never leaves a half-written file served.
const (
	metaSuffix = ".json"
	tmpPrefix  = ".tmp-"
	// idBytes of crypto/rand make an id: 144 bits, 24 base64url characters
	// with no padding.
	idBytes = 18
	// maxNameBytes bounds the file name in links and downloads.
	maxNameBytes = 120
)

var idLen = base64.RawURLEncoding.EncodedLen(idBytes)

func mediaDir(stateDir string) string { return filepath.Join(stateDir, "media") }

func (s *Server) dataPath(id string) string { return filepath.Join(s.dir, id) }
func (s *Server) metaPath(id string) string { return filepath.Join(s.dir, id+metaSuffix) }

// entry is one published file's metadata, its {id}.json.
type entry struct {
	id      string
	MIME    string    `json:"mime"`
	Name    string    `json:"name"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

// expiresUnder is when e expires under the expiry configured now: a
// shortened media.expiry also cuts short the links already handed out.
func (e *entry) expiresUnder(expiry time.Duration) time.Time {
	if cut := e.Created.Add(expiry); cut.Before(e.Expires) {
		return cut
	}
	return e.Expires
}

// newID is an unguessable id: the link is the only key to a file.
func newID() string {
	b := make([]byte, idBytes)
	rand.Read(b) // never fails; it crashes the program instead
	return base64.RawURLEncoding.EncodeToString(b)
}

// validID accepts only what newID makes, so neither a URL nor a stray
// file name can reach outside the directory or another file.
func validID(id string) bool {
	if len(id) != idLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Publish copies m's bytes, at most media.max_bytes, and returns the URL
// that serves them until media.expiry has passed.
func (s *Server) Publish(ctx context.Context, m bridge.Media) (string, error) {
	if m.Size > s.cfg.MaxBytes {
		return "", s.tooLarge(m)
	}
	if m.Open == nil {
		return "", bridge.Permanentf("attachment %q cannot be opened", m.Name)
	}
	r, err := m.Open(ctx)
	if err != nil {
		return "", err
	}
	defer r.Close()
	e := &entry{id: newID(), MIME: cleanMIME(m.MIME), Name: cleanName(m.Name, m.MIME)}
	e.Size, err = s.write(s.dataPath(e.id), func(w io.Writer) (int64, error) {
		n, err := io.Copy(w, io.LimitReader(ctxReader{ctx, r}, s.cfg.MaxBytes+1))
		if err == nil && n > s.cfg.MaxBytes {
			err = errTooLarge
		}
		return n, err
	})
	if errors.Is(err, errTooLarge) {
		return "", s.tooLarge(m)
	}
	if err != nil {
		return "", fmt.Errorf("publish attachment %q: %w", m.Name, err)
	}
	e.Created = s.now().UTC()
	e.Expires = e.Created.Add(s.cfg.Expiry)
	meta, err := json.Marshal(e)
	if err == nil {
		_, err = s.write(s.metaPath(e.id), func(w io.Writer) (int64, error) {
			n, err := w.Write(meta)
			return int64(n), err
		})
	}
	if err != nil {
		os.Remove(s.dataPath(e.id))
		return "", fmt.Errorf("publish attachment %q: %w", m.Name, err)
	}
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.add(e)
	}
	s.mu.Unlock()
	if closed {
		s.remove(e.id)
		return "", errors.New("publish attachment: the media server is stopping")
	}
	s.log.Debug("published an attachment", "mime", e.MIME, "bytes", e.Size, "expires", e.Expires)
	return s.base + "/" + e.id + "/" + url.PathEscape(e.Name), nil
}

// errTooLarge stops writing a file over media.max_bytes.
var errTooLarge = errors.New("over media.max_bytes")

func (s *Server) tooLarge(m bridge.Media) error {
	return bridge.Permanentf("attachment %q is over media.max_bytes (%d bytes)", m.Name, s.cfg.MaxBytes)
}

// write creates path atomically with what fill writes (mode 0600): under
// a temp name, synced, then renamed; on any error there is no file.
func (s *Server) write(path string, fill func(io.Writer) (int64, error)) (int64, error) {
	tmp, err := os.CreateTemp(s.dir, tmpPrefix+"*")
	if err != nil {
		return 0, err
	}
	n, err := fill(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return n, err
}

// ctxReader ends a copy when ctx does, whatever the reader's own source.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// load rebuilds the index from the directory and deletes what expired
// while the daemon was down, leftover temp files and half-published files.
func (s *Server) load() error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("media: create %s: %w", s.dir, err)
	}
	// The directory may predate us with a looser mode; the files are
	// readable by anyone who knows their URL, not by anyone on the host.
	if err := os.Chmod(s.dir, 0o700); err != nil {
		return fmt.Errorf("media: %w", err)
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("media: %w", err)
	}
	now := s.now()
	var stale []string
	for _, de := range ents {
		name := de.Name()
		if strings.HasPrefix(name, tmpPrefix) {
			stale = append(stale, name)
			continue
		}
		id, isMeta := strings.CutSuffix(name, metaSuffix)
		if !validID(id) {
			continue // not ours: leave it alone
		}
		e, err := s.readEntry(id)
		switch {
		case err != nil:
			if isMeta {
				s.log.Warn("media: deleting a file with unreadable metadata", "file", name, "err", err)
			}
			stale = append(stale, name)
		case !now.Before(e.expiresUnder(s.cfg.Expiry)):
			stale = append(stale, name)
		case isMeta:
			e.Expires = e.expiresUnder(s.cfg.Expiry)
			s.files[id] = e
		}
	}
	for _, name := range stale {
		if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("media: cannot delete a stale file", "err", err)
		}
	}
	s.mu.Lock()
	for _, e := range s.files {
		heap.Push(&s.due, e)
	}
	s.rearm()
	s.mu.Unlock()
	return nil
}

// readEntry reads id's metadata and checks its bytes are all there.
func (s *Server) readEntry(id string) (*entry, error) {
	b, err := os.ReadFile(s.metaPath(id))
	if err != nil {
		return nil, err
	}
	e := &entry{id: id}
	if err := json.Unmarshal(b, e); err != nil {
		return nil, err
	}
	fi, err := os.Stat(s.dataPath(id))
	if err != nil {
		return nil, err
	}
	if fi.Size() != e.Size {
		return nil, fmt.Errorf("%d bytes where its metadata says %d", fi.Size(), e.Size)
	}
	return e, nil
}

// add indexes e and arms the timer for it if it is now the first due.
// s.mu is held.
func (s *Server) add(e *entry) {
	s.files[e.id] = e
	heap.Push(&s.due, e)
	s.rearm()
}

// remove deletes id's files, metadata first so that a crash in between
// leaves bytes that the next Start deletes.
func (s *Server) remove(id string) {
	for _, p := range []string{s.metaPath(id), s.dataPath(id)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("media: cannot delete an expired file", "err", err)
		}
	}
}

// rearm points the one timer at the first expiry, or stops it when no
// file is left. s.mu is held.
func (s *Server) rearm() {
	if s.closed {
		return
	}
	var next time.Time
	if len(s.due) > 0 {
		next = s.due[0].Expires
	}
	if next.Equal(s.armed) {
		return
	}
	if s.timer != nil && s.timer.Stop() {
		s.timers.Done()
	}
	s.timer, s.armed = nil, next
	if next.IsZero() {
		return
	}
	s.timers.Add(1)
	s.timer = time.AfterFunc(next.Sub(s.now()), s.fire)
}

// fire is the timer's run: it expires what is due and arms for the next.
func (s *Server) fire() {
	defer s.timers.Done()
	s.fired.Add(1)
	s.expire()
}

// expire deletes every file whose expiry has passed.
func (s *Server) expire() {
	now := s.now()
	var gone []string
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	for len(s.due) > 0 && !now.Before(s.due[0].Expires) {
		e := heap.Pop(&s.due).(*entry)
		delete(s.files, e.id)
		gone = append(gone, e.id)
	}
	s.armed = time.Time{} // whether it fired or not, arm afresh
	s.rearm()
	s.mu.Unlock()
	for _, id := range gone {
		s.remove(id)
	}
	if len(gone) > 0 {
		s.log.Debug("deleted expired attachments", "count", len(gone))
	}
}

// expiryHeap orders entries by expiry, the first due on top.
type expiryHeap []*entry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].Expires.Before(h[j].Expires) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(*entry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

// cleanMIME is m's MIME type re-formatted, or application/octet-stream
// when it has none or none that parses.
func cleanMIME(m string) string {
	t, params, err := mime.ParseMediaType(m)
	if err == nil {
		if v := mime.FormatMediaType(t, params); v != "" {
			return v
		}
	}
	return "application/octet-stream"
}

// defaultExt names files that came without a name, by MIME type, for the
// kinds chats send most.
var defaultExt = map[string]string{
	"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif", "image/webp": ".webp",
	"video/mp4": ".mp4", "audio/ogg": ".ogg", "audio/mpeg": ".mp3", "audio/mp4": ".m4a",
	"application/pdf": ".pdf",
}

// cleanName makes an attachment's name safe in a URL path segment and a
// download: no directories, control or bidi formatting characters (which
// disguise "gpj.exe"), characters file systems refuse, or leading and
// trailing dots and spaces; at most maxNameBytes, keeping the extension.
func cleanName(name, mimeType string) string {
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		switch {
		case r == utf8.RuneError, unicode.IsControl(r), unicode.Is(unicode.Cf, r):
			return -1
		case strings.ContainsRune(`"<>:|?*`, r):
			return '_'
		}
		return r
	}, name)
	name = strings.Trim(name, ". ")
	if name == "" {
		t, _, _ := mime.ParseMediaType(mimeType)
		return "file" + defaultExt[t]
	}
	if len(name) > maxNameBytes {
		ext := filepath.Ext(name)
		if len(ext) > 16 {
			ext = ""
		}
		stem := name[:maxNameBytes-len(ext)]
		for !utf8.ValidString(stem) {
			stem = stem[:len(stem)-1]
		}
		name = strings.TrimRight(stem, ". ") + ext
	}
	return name
}
