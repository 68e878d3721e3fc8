package pocketapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/octohelm/crpe/internal/httpx"
)

// Kinds and states of jobs.
const (
	KindSync   = "sync"
	KindExport = "export"
	KindSend   = "send"
	// KindStream is an export of posted packages (POST /api/v1/export),
	// streamed to the client that posted them (crpe export): not a
	// download of a package of the library, whose card shows its jobs.
	KindStream = "stream"

	StateRunning = "running"
	StateDone    = "done"
	StateFailed  = "failed"
)

// progressInterval is how often a running job's progress is published.
const progressInterval = 250 * time.Millisecond

// ImageProgress is one image's part of a job.
type ImageProgress struct {
	Ref       string `json:"ref"`
	Bytes     int64  `json:"bytes"`
	Total     int64  `json:"total"`
	Rate      int64  `json:"rate"`
	Blobs     int    `json:"blobs"`
	BlobsDone int    `json:"blobsDone"`
}

// JobView is a job as the API shows it.
type JobView struct {
	ID        string          `json:"id"`
	Kind      string          `json:"kind"`
	Package   string          `json:"package"`
	Agent     string          `json:"agent,omitempty"`
	State     string          `json:"state"`
	Phase     string          `json:"phase,omitempty"`
	Error     string          `json:"error,omitempty"`
	StartedAt time.Time       `json:"startedAt"`
	EndedAt   *time.Time      `json:"endedAt,omitempty"`
	Bytes     int64           `json:"bytes"`
	Total     int64           `json:"total"`
	Rate      int64           `json:"rate"`
	Percent   int             `json:"percent"`
	Images    []ImageProgress `json:"images,omitempty"`
	Result    any             `json:"result,omitempty"`
}

// Job is a running or finished sync, export or send.
type Job struct {
	mu     sync.Mutex
	v      JobView
	images map[string]*imageCounter
	// extra, if set, adds bytes still on their way to an image's count
	// (upstream transfers in flight).
	extra      func(ref string) int64
	extraTotal func() int64
	samples    []sample
	rates      map[string][]sample
	cancel     context.CancelFunc
	done       chan struct{}
}

type imageCounter struct {
	ImageProgress
	inflight func() int64
}

type sample struct {
	t time.Time
	n int64
}

// SetInFlight tells the job how to count bytes still on their way: per
// image, and in all.
func (j *Job) SetInFlight(perImage func(ref string) int64, total func() int64) {
	j.mu.Lock()
	j.extra, j.extraTotal = perImage, total
	j.mu.Unlock()
}

// SetPhase names what the job is doing.
func (j *Job) SetPhase(p string) {
	j.mu.Lock()
	j.v.Phase = p
	j.mu.Unlock()
}

// SetImages sets the images and their sizes (what is done already counts).
func (j *Job) SetImages(images []ImageProgress) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.images = map[string]*imageCounter{}
	j.v.Images = nil
	for _, im := range images {
		j.images[im.Ref] = &imageCounter{ImageProgress: im}
		j.v.Images = append(j.v.Images, im)
	}
}

// SetTotal sets the job's total bytes and what is already done.
func (j *Job) SetTotal(total, done int64) {
	j.mu.Lock()
	j.v.Total, j.v.Bytes = total, done
	j.mu.Unlock()
}

// Add counts n more bytes done for the job.
func (j *Job) Add(n int64) {
	j.mu.Lock()
	j.v.Bytes += n
	j.mu.Unlock()
}

// SetBytes sets the bytes done.
func (j *Job) SetBytes(n int64) {
	j.mu.Lock()
	j.v.Bytes = n
	j.mu.Unlock()
}

// ImageDone counts a blob of n bytes done for image ref.
func (j *Job) ImageDone(ref string, n int64) {
	j.mu.Lock()
	if c := j.images[ref]; c != nil {
		c.Bytes += n
		c.BlobsDone++
	}
	j.mu.Unlock()
}

// view snapshots the job, with rates over the last two seconds.
func (j *Job) view() JobView {
	j.mu.Lock()
	defer j.mu.Unlock()
	now := time.Now()
	v := j.v
	var extra int64
	if v.State == StateRunning {
		v.Images = make([]ImageProgress, 0, len(j.v.Images))
		if j.rates == nil {
			j.rates = map[string][]sample{}
		}
		for _, im := range j.v.Images {
			c := j.images[im.Ref]
			p := c.ImageProgress
			if j.extra != nil {
				x := j.extra(p.Ref)
				if p.Bytes+x > p.Total {
					x = p.Total - p.Bytes
				}
				p.Bytes += x
			}
			j.rates[p.Ref] = addSample(j.rates[p.Ref], now, p.Bytes)
			p.Rate = rate(j.rates[p.Ref])
			v.Images = append(v.Images, p)
		}
		if j.extraTotal != nil {
			extra = j.extraTotal()
		}
		if v.Bytes+extra > v.Total {
			extra = v.Total - v.Bytes
		}
		if extra > 0 {
			v.Bytes += extra
		}
		j.samples = addSample(j.samples, now, v.Bytes)
		v.Rate = rate(j.samples)
	} else {
		v.Images = append([]ImageProgress(nil), j.v.Images...)
	}
	if v.Total > 0 {
		v.Percent = int(v.Bytes * 100 / v.Total)
		if v.Percent > 100 {
			v.Percent = 100
		}
		if v.Percent == 100 && v.State == StateRunning && v.Bytes < v.Total {
			v.Percent = 99
		}
	} else if v.State == StateDone {
		v.Percent = 100
	}
	return v
}

func addSample(s []sample, t time.Time, n int64) []sample {
	s = append(s, sample{t, n})
	for len(s) > 2 && t.Sub(s[0].t) > 2*time.Second {
		s = s[1:]
	}
	return s
}

func rate(s []sample) int64 {
	if len(s) < 2 {
		return 0
	}
	dt := s[len(s)-1].t.Sub(s[0].t).Seconds()
	if dt <= 0 {
		return 0
	}
	return int64(float64(s[len(s)-1].n-s[0].n) / dt)
}

// Jobs keeps the running jobs and the last finished ones, and publishes
// their progress on the hub.
type Jobs struct {
	hub *Hub
	ctx context.Context

	mu   sync.Mutex
	jobs []*Job
}

// maxFinishedJobs bounds the finished jobs kept.
const maxFinishedJobs = 50

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Running returns the running job of kind for pkg (and agent), if any.
func (js *Jobs) Running(kind, pkg, agent string) *Job {
	js.mu.Lock()
	defer js.mu.Unlock()
	for _, j := range js.jobs {
		j.mu.Lock()
		match := j.v.State == StateRunning && j.v.Kind == kind && j.v.Package == pkg && j.v.Agent == agent
		j.mu.Unlock()
		if match {
			return j
		}
	}
	return nil
}

// AnyRunning tells whether any job runs.
func (js *Jobs) AnyRunning() bool {
	js.mu.Lock()
	defer js.mu.Unlock()
	for _, j := range js.jobs {
		j.mu.Lock()
		r := j.v.State == StateRunning
		j.mu.Unlock()
		if r {
			return true
		}
	}
	return false
}

// Start runs fn as a job in the background (detached from any request,
// cancelled when the pocket stops). fn's error fails the job; its result
// is kept.
func (js *Jobs) Start(kind, pkg, agent string, fn func(ctx context.Context, j *Job) (any, error)) *Job {
	ctx, cancel := context.WithCancel(js.ctx)
	j := js.begin(kind, pkg, agent, cancel)
	go func() {
		defer cancel()
		res, err := fn(ctx, j)
		js.finish(j, res, err)
	}()
	return j
}

// begin registers a job that the caller runs, and starts publishing its
// progress; the caller must call finish.
func (js *Jobs) begin(kind, pkg, agent string, cancel context.CancelFunc) *Job {
	j := &Job{v: JobView{ID: newID(), Kind: kind, Package: pkg, Agent: agent, State: StateRunning, StartedAt: time.Now().UTC()},
		cancel: cancel, done: make(chan struct{}), images: map[string]*imageCounter{}}
	js.mu.Lock()
	js.jobs = append(js.jobs, j)
	// drop the oldest finished jobs beyond the bound
	finished := 0
	for i := len(js.jobs) - 1; i >= 0; i-- {
		if js.jobs[i].view().State != StateRunning {
			finished++
			if finished > maxFinishedJobs {
				js.jobs = append(js.jobs[:i], js.jobs[i+1:]...)
			}
		}
	}
	js.mu.Unlock()
	js.publish(j)
	go func() {
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		for {
			select {
			case <-j.done:
				return
			case <-t.C:
				js.publish(j)
			}
		}
	}()
	return j
}

func (js *Jobs) finish(j *Job, res any, err error) {
	j.mu.Lock()
	now := time.Now().UTC()
	j.v.EndedAt = &now
	j.v.Result = res
	if err != nil {
		j.v.State = StateFailed
		j.v.Error = err.Error()
	} else {
		j.v.State = StateDone
		j.v.Phase = ""
		if j.v.Total > 0 {
			j.v.Bytes = j.v.Total
		}
		for i := range j.v.Images {
			if c := j.images[j.v.Images[i].Ref]; c != nil {
				c.Bytes = c.Total
				c.BlobsDone = c.Blobs
				j.v.Images[i] = c.ImageProgress
			}
		}
	}
	if err != nil {
		for i := range j.v.Images {
			if c := j.images[j.v.Images[i].Ref]; c != nil {
				j.v.Images[i] = c.ImageProgress
			}
		}
	}
	j.mu.Unlock()
	close(j.done)
	js.publish(j)
}

func (js *Jobs) publish(j *Job) {
	v := j.view()
	js.hub.Publish("job:"+v.ID, "job", v)
}

// Get returns job id.
func (js *Jobs) Get(id string) *Job {
	js.mu.Lock()
	defer js.mu.Unlock()
	for _, j := range js.jobs {
		if j.v.ID == id {
			return j
		}
	}
	return nil
}

// List snapshots every job, newest first.
func (js *Jobs) List() []JobView {
	js.mu.Lock()
	jobs := append([]*Job(nil), js.jobs...)
	js.mu.Unlock()
	out := make([]JobView, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, j.view())
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].StartedAt.After(out[b].StartedAt) })
	return out
}

// Hub fans events out to Server-Sent Events subscribers. Each subscriber
// keeps only the latest event per key (a job's progress is a snapshot), so
// a slow client never holds the pocket back nor misses a final state.
type Hub struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
}

type subscriber struct {
	mu      sync.Mutex
	pending map[string][]byte
	order   []string
	notify  chan struct{}
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{subs: map[*subscriber]struct{}{}} }

// Publish sends event (with data as JSON) to every subscriber, replacing
// an unsent event of the same key.
func (h *Hub) Publish(key, event string, data any) {
	b, err := json.Marshal(data)
	if err != nil {
		return
	}
	msg := []byte("event: " + event + "\ndata: ")
	msg = append(msg, b...)
	msg = append(msg, '\n', '\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		s.mu.Lock()
		if _, ok := s.pending[key]; !ok {
			s.order = append(s.order, key)
		}
		s.pending[key] = msg
		s.mu.Unlock()
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
}

// Subscribers counts the open event streams.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

func (h *Hub) subscribe() *subscriber {
	s := &subscriber{pending: map[string][]byte{}, notify: make(chan struct{}, 1)}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s
}

func (h *Hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
}

func (s *subscriber) take() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([][]byte, 0, len(s.order))
	for _, k := range s.order {
		out = append(out, s.pending[k])
	}
	s.order = s.order[:0]
	clear(s.pending)
	return out
}

// events streams the hub as Server-Sent Events: first every known job,
// then each change, with a comment every 15 s to keep the stream open.
func (a *API) events(w http.ResponseWriter, r *http.Request) {
	httpx.SetRoute(r, "events")
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s := a.hub.subscribe()
	defer a.hub.unsubscribe(s)
	if _, err := w.Write([]byte("retry: 2000\n\n")); err != nil {
		return
	}
	for _, v := range a.jobs.List() {
		b, _ := json.Marshal(v)
		if _, err := w.Write([]byte("event: job\ndata: " + string(b) + "\n\n")); err != nil {
			return
		}
	}
	if rc.Flush() != nil {
		return
	}
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-a.ctx.Done():
			return
		case <-ping.C:
			if _, err := w.Write([]byte(": ping\n\n")); err != nil {
				return
			}
		case <-s.notify:
			for _, m := range s.take() {
				if _, err := w.Write(m); err != nil {
					return
				}
			}
		}
		if rc.Flush() != nil {
			return
		}
	}
}
