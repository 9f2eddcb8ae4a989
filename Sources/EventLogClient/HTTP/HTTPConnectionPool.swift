import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// Sends requests on keep-alive HTTP/1.1 connections and keeps a few idle ones for reuse.
///
/// Each request has a connection to itself while it runs. An idle connection is reused only while it is open and
/// younger than ``EventLogClient/Configuration/idleConnectionTimeout``. When a reused connection turns out to have
/// been closed by the server before any answer arrived, a replayable request (see ``HTTPRequest/isReplayable``) is
/// sent again on a new connection; any other request fails, because the server may have acted on it.
final class HTTPConnectionPool: @unchecked Sendable {
    private struct IdleConnection {
        var channel: any Channel
        var since: Duration
    }

    private let baseURL: String
    private let address: ServerAddress
    private let group: any EventLoopGroup
    private let configuration: EventLogClient.Configuration
    // Guards `idle`; never held across an await.
    private let lock = NSLock()
    private var idle: [IdleConnection] = []

    init(
        baseURL: String,
        address: ServerAddress,
        group: any EventLoopGroup,
        configuration: EventLogClient.Configuration
    ) {
        self.baseURL = baseURL
        self.address = address
        self.group = group
        self.configuration = configuration
    }

    deinit {
        // A channel that is no longer active needs nothing; skipping it also avoids scheduling work on the event
        // loop of a group that was shut down before the last copy of the client went away.
        for connection in self.idle where connection.channel.isActive {
            connection.channel.close(promise: nil)
        }
    }

    /// Sends `request` and returns the whole answer.
    func execute(_ request: HTTPRequest) async throws -> HTTPResponse {
        if let channel = self.takeIdleConnection() {
            do {
                return try await self.exchange(request, on: channel)
            } catch HTTPExchangeError.closedBeforeResponse where request.isReplayable {
                // The server closed the idle connection as we reused it; the request was not acted upon.
            } catch {
                throw Self.map(error)
            }
        }
        let channel: any Channel
        do {
            channel = try await self.connect()
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw EventLogClientError.cannotConnect(to: self.baseURL, error)
        }
        do {
            return try await self.exchange(request, on: channel)
        } catch {
            throw Self.map(error)
        }
    }

    /// Closes the idle connections.
    func closeIdleConnections() {
        let connections = self.lock.withLock {
            defer { self.idle = [] }
            return self.idle
        }
        for connection in connections where connection.channel.isActive {
            connection.channel.close(promise: nil)
        }
    }

    private func takeIdleConnection() -> (any Channel)? {
        let now = self.configuration.clock.uptime
        let maximumAge = self.configuration.idleConnectionTimeout
        var stale: [any Channel] = []
        let channel: (any Channel)? = self.lock.withLock {
            while let connection = self.idle.popLast() {
                if connection.channel.isActive, now - connection.since < maximumAge {
                    return connection.channel
                }
                stale.append(connection.channel)
            }
            return nil
        }
        for channel in stale where channel.isActive {
            channel.close(promise: nil)
        }
        return channel
    }

    private func returnIdleConnection(_ channel: any Channel) {
        let kept = self.lock.withLock {
            guard self.idle.count < self.configuration.maxIdleConnections else {
                return false
            }
            self.idle.append(IdleConnection(channel: channel, since: self.configuration.clock.uptime))
            return true
        }
        if !kept {
            channel.close(promise: nil)
        }
    }

    private func connect() async throws -> any Channel {
        let maximumBodyBytes = self.configuration.maxResponseBytes
        let clock = self.configuration.clock
        return try await ClientBootstrap(group: self.group)
            .connectTimeout(TimeAmount(self.configuration.connectTimeout))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(
                        HTTPExchangeHandler(maximumBodyBytes: maximumBodyBytes, clock: clock)
                    )
                }
            }
            .connect(host: self.address.host, port: self.address.port)
            .get()
    }

    private func exchange(_ request: HTTPRequest, on channel: any Channel) async throws -> HTTPResponse {
        let promise = channel.eventLoop.makePromise(of: HTTPResponse.self)
        let exchange = HTTPExchangeRequest(
            request: request,
            timeout: self.configuration.requestTimeout,
            promise: promise
        )
        // A write that fails never reaches the handler (the channel is closed): nothing was sent.
        channel.writeAndFlush(exchange).whenFailure { _ in
            promise.fail(HTTPExchangeError.closedBeforeResponse)
        }
        let response: HTTPResponse
        do {
            response = try await withTaskCancellationHandler {
                try await promise.futureResult.get()
            } onCancel: {
                channel.close(promise: nil)
            }
        } catch {
            channel.close(promise: nil)
            throw error
        }
        if response.head.isKeepAlive, self.configuration.maxIdleConnections > 0, !Task.isCancelled {
            self.returnIdleConnection(channel)
        } else {
            channel.close(promise: nil)
        }
        return response
    }

    /// Maps exchange failures to client errors; cancellation stays a `CancellationError`.
    static func map(_ error: any Error) -> any Error {
        switch error {
        case let error as EventLogClientError:
            return error
        case HTTPExchangeError.timedOut:
            return EventLogClientError(.timeout, message: "no complete answer within the request timeout")
        case HTTPExchangeError.closedBeforeResponse:
            return EventLogClientError(.connectionClosed, message: "the server closed the connection before answering")
        case HTTPExchangeError.closedDuringResponse:
            return EventLogClientError(.connectionClosed, message: "the server closed the connection while answering")
        case HTTPExchangeError.bodyTooLarge(let limit):
            return EventLogClientError(.responseTooLarge, message: "the answer is over \(limit) bytes")
        case is CancellationError:
            return error
        default:
            return EventLogClientError(.connectionFailed, message: String(describing: error))
        }
    }
}
