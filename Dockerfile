# crpe's image: the static binary on an empty base.
#   docker build -t ghcr.io/octohelm/crpe:dev .
# With no Docker at hand (air gap), `crpe install --image-archive crpe-image.tar`
# writes the same kind of image from the crpe binary itself.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/octohelm/crpe/internal/version.Version=${VERSION}" -o /out/crpe ./cmd/crpe

FROM scratch
COPY --from=build /out/crpe /crpe
USER 65532:65532
ENTRYPOINT ["/crpe"]
