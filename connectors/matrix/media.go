package matrix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
)

// openMXC opens an attachment in the content repository, refusing more
// than max bytes. Authenticated media (/_matrix/client/v1/media) comes
// first; homeservers without it still serve /_matrix/media/v3.
func openMXC(ctx context.Context, cli *mautrix.Client, ref string, max int64) (io.ReadCloser, error) {
	uri, err := id.ParseContentURI(ref)
	if err != nil || uri.IsEmpty() {
		return nil, bridge.Permanentf("attachment ref %q is not an mxc:// URI", ref)
	}
	resp, err := cli.Download(ctx, uri)
	if errors.Is(err, mautrix.MUnrecognized) {
		_, resp, err = cli.MakeFullRequestWithResp(ctx, mautrix.FullRequest{
			Method:           http.MethodGet,
			URL:              cli.BuildURL(mautrix.MediaURLPath{"v3", "download", uri.Homeserver, uri.FileID}),
			DontReadResponse: true,
		})
	}
	if err != nil {
		if errors.Is(err, mautrix.MNotFound) {
			return nil, bridge.Permanentf("attachment %s is no longer on the homeserver", ref)
		}
		return nil, classify(err)
	}
	if resp.ContentLength > max {
		resp.Body.Close()
		return nil, bridge.Permanentf("attachment %s is %d bytes, over max_media_bytes (%d)", ref, resp.ContentLength, max)
	}
	return &limitedBody{rc: resp.Body, left: max, ref: ref, max: max}, nil
}

// limitedBody fails, permanently, once more than max bytes were read.
type limitedBody struct {
	rc   io.ReadCloser
	left int64
	ref  string
	max  int64
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.rc.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return 0, bridge.Permanentf("attachment %s is over max_media_bytes (%d)", l.ref, l.max)
	}
	return n, err
}

func (l *limitedBody) Close() error { return l.rc.Close() }

// uploadMedia copies an outgoing attachment, at most max bytes, to a
// temporary file and from there to the content repository; the file
// gives the upload its length without holding the bytes in memory.
func uploadMedia(ctx context.Context, cli *mautrix.Client, m bridge.Media, max int64) (id.ContentURI, int64, error) {
	if m.Open == nil {
		return id.ContentURI{}, 0, bridge.Permanentf("attachment %q cannot be opened", m.Name)
	}
	r, err := m.Open(ctx)
	if err != nil {
		return id.ContentURI{}, 0, err
	}
	defer r.Close()
	tmp, err := os.CreateTemp("", "phonebridge-matrix-upload-*")
	if err != nil {
		return id.ContentURI{}, 0, fmt.Errorf("buffer an attachment: %w", err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	size, err := io.Copy(tmp, io.LimitReader(r, max+1))
	if err != nil {
		return id.ContentURI{}, 0, fmt.Errorf("read attachment %q: %w", m.Name, err)
	}
	if size > max {
		return id.ContentURI{}, 0, bridge.Permanentf("attachment %q is over max_media_bytes (%d)", m.Name, max)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return id.ContentURI{}, 0, fmt.Errorf("buffer an attachment: %w", err)
	}
	mime := m.MIME
	if mime == "" {
		mime = "application/octet-stream"
	}
	resp, err := cli.UploadMedia(ctx, mautrix.ReqUploadMedia{
		Content:       tmp,
		ContentLength: size,
		ContentType:   mime,
		FileName:      m.Name,
	})
	if err != nil {
		return id.ContentURI{}, 0, classify(err)
	}
	return resp.ContentURI, size, nil
}
