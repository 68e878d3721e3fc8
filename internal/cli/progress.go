package cli

import (
	"io"
	"os"
	"sync"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"github.com/octohelm/crpe/internal/export"
)

// isTerminal reports whether w is a terminal (progress bars go there only).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// barProgress draws per-image fetch bars, a total bar and a write bar.
type barProgress struct {
	p      *mpb.Progress
	mu     sync.Mutex
	images map[string]*mpb.Bar
	total  *mpb.Bar
	write  *mpb.Bar
}

func newBarProgress(w io.Writer) *barProgress {
	return &barProgress{p: mpb.New(mpb.WithOutput(w), mpb.WithWidth(40)), images: map[string]*mpb.Bar{}}
}

func bytesBar(p *mpb.Progress, label string, total int64) *mpb.Bar {
	return p.AddBar(total,
		mpb.PrependDecorators(decor.Name(label, decor.WCSyncSpaceR), decor.Counters(decor.SizeB1024(0), "% .1f / % .1f")),
		mpb.AppendDecorators(decor.EwmaSpeed(decor.SizeB1024(0), "% .1f", 30), decor.Name(" "), decor.EwmaETA(decor.ET_STYLE_GO, 30)),
	)
}

func (b *barProgress) Plan(images []export.ImageResult) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var sum int64
	for _, im := range images {
		b.images[im.Ref] = bytesBar(b.p, im.Ref, im.Bytes)
		sum += im.Bytes
	}
	b.total = bytesBar(b.p, "fetch total", sum)
	b.write = bytesBar(b.p, "write archive", sum)
}

func (b *barProgress) Fetched(ref string, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if bar := b.images[ref]; bar != nil {
		bar.EwmaIncrInt64(n, 0)
	}
	if b.total != nil {
		b.total.EwmaIncrInt64(n, 0)
	}
}

func (b *barProgress) Written(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.write != nil {
		b.write.EwmaIncrInt64(n, 0)
	}
}

// done completes every bar (sizes are estimates: shared blobs count once)
// and waits for the last render.
func (b *barProgress) done() {
	b.mu.Lock()
	for _, bar := range b.images {
		bar.SetTotal(-1, true)
	}
	for _, bar := range []*mpb.Bar{b.total, b.write} {
		if bar != nil {
			bar.SetTotal(-1, true)
		}
	}
	b.mu.Unlock()
	b.p.Wait()
}

// readBar reads r through a progress bar of total bytes on a terminal (none
// with --json, or when stderr is not a terminal); done ends the bar.
func readBar(cmd *cobra.Command, asJSON bool, label string, total int64, r io.Reader) (_ io.Reader, done func()) {
	if !isTerminal(cmd.ErrOrStderr()) || asJSON {
		return r, func() {}
	}
	p := mpb.New(mpb.WithOutput(cmd.ErrOrStderr()), mpb.WithWidth(40))
	pr, _ := bytesBar(p, label, total).ProxyReader(r)
	return pr, p.Shutdown
}

// readAtBar is readBar for an archive read at offsets: the bar counts the
// bytes read, from wherever (several readers at once, a resumed upload
// reading some again).
func readAtBar(cmd *cobra.Command, asJSON bool, label string, total int64, ra io.ReaderAt) (_ io.ReaderAt, done func()) {
	if !isTerminal(cmd.ErrOrStderr()) || asJSON {
		return ra, func() {}
	}
	p := mpb.New(mpb.WithOutput(cmd.ErrOrStderr()), mpb.WithWidth(40))
	return &barReaderAt{ra: ra, bar: bytesBar(p, label, total)}, p.Shutdown
}

type barReaderAt struct {
	ra  io.ReaderAt
	bar *mpb.Bar
}

func (b *barReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := b.ra.ReadAt(p, off)
	b.bar.IncrBy(n)
	return n, err
}
