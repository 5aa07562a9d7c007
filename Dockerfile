# syntax=docker/dockerfile:1
# A static, non-root image of the operator: build stage, then nothing but the binary and CA
# certificates on an empty base (distroless-style: no shell, no package manager).
#   docker build -t secretref:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# A fully static binary (glibc statically linked): runs on an empty base image.
RUN scripts/build-static

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/secretref /secretref
USER 65532:65532
ENTRYPOINT ["/secretref"]
CMD ["run"]
