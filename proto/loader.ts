import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { ProtoGrpcType } from './generated/hangar.js';
import { PACKAGE_ROOT } from '../common/package-root.js';

export type { AgentMessage, AgentMessage__Output } from './generated/hangar/v1/AgentMessage.js';
export type { CoordinatorMessage, CoordinatorMessage__Output } from './generated/hangar/v1/CoordinatorMessage.js';
export type { AgentServiceClient, AgentServiceHandlers } from './generated/hangar/v1/AgentService.js';
export type { DesiredState, DesiredState__Output } from './generated/hangar/v1/DesiredState.js';
export type { InstanceSpec, InstanceSpec__Output } from './generated/hangar/v1/InstanceSpec.js';
export type { InstanceStatus, InstanceStatus__Output } from './generated/hangar/v1/InstanceStatus.js';
export type { InstanceEvent__Output } from './generated/hangar/v1/InstanceEvent.js';
export type { AppRoutes, AppRoutes__Output } from './generated/hangar/v1/AppRoutes.js';
export type { Backend__Output } from './generated/hangar/v1/Backend.js';
export type { TlsCertificate, TlsCertificate__Output } from './generated/hangar/v1/TlsCertificate.js';
export type { AcmeChallenge, AcmeChallenge__Output } from './generated/hangar/v1/AcmeChallenge.js';
export type { Task, Task__Output } from './generated/hangar/v1/Task.js';
export type { TaskScript } from './generated/hangar/v1/TaskScript.js';
export type { TaskOutput__Output } from './generated/hangar/v1/TaskOutput.js';
export type { Hello__Output } from './generated/hangar/v1/Hello.js';
export type { Heartbeat__Output } from './generated/hangar/v1/Heartbeat.js';
export type { LogBatch, LogBatch__Output } from './generated/hangar/v1/LogBatch.js';
export type { LogLine, LogLine__Output } from './generated/hangar/v1/LogLine.js';
export type { FetchArtifactRequest__Output } from './generated/hangar/v1/FetchArtifactRequest.js';
export type { ArtifactChunk, ArtifactChunk__Output } from './generated/hangar/v1/ArtifactChunk.js';
export type { AddonSpec, AddonSpec__Output } from './generated/hangar/v1/AddonSpec.js';
export type { AddonStatus, AddonStatus__Output } from './generated/hangar/v1/AddonStatus.js';
export type { AddonJob, AddonJob__Output } from './generated/hangar/v1/AddonJob.js';
export type { AddonJobResult, AddonJobResult__Output } from './generated/hangar/v1/AddonJobResult.js';
export type { AddonBackup, AddonBackup__Output } from './generated/hangar/v1/AddonBackup.js';
export type { BackupChunk, BackupChunk__Output } from './generated/hangar/v1/BackupChunk.js';
export type { UploadBackupResult, UploadBackupResult__Output } from './generated/hangar/v1/UploadBackupResult.js';
export type { FetchBackupRequest, FetchBackupRequest__Output } from './generated/hangar/v1/FetchBackupRequest.js';
export type { MetricsReport, MetricsReport__Output } from './generated/hangar/v1/MetricsReport.js';
export type { InstanceMetrics, InstanceMetrics__Output } from './generated/hangar/v1/InstanceMetrics.js';
export type { TrafficStats, TrafficStats__Output } from './generated/hangar/v1/TrafficStats.js';
export type { RunSpec, RunSpec__Output } from './generated/hangar/v1/RunSpec.js';
export type { RunInput, RunInput__Output } from './generated/hangar/v1/RunInput.js';
export type { RunOutput, RunOutput__Output } from './generated/hangar/v1/RunOutput.js';
export type { RunStatus, RunStatus__Output } from './generated/hangar/v1/RunStatus.js';
export type { JoinRequest__Output } from './generated/hangar/v1/JoinRequest.js';
export type { JoinResponse, JoinResponse__Output } from './generated/hangar/v1/JoinResponse.js';

/** Path of the .proto file, in the package's proto/. */
export const PROTO_PATH = join(PACKAGE_ROOT, 'proto', 'hangar.proto');

let cached: ProtoGrpcType | undefined;

/**
 * Loads hangar.proto with the options the generated types were made with (camelCase fields,
 * 64-bit integers as numbers, defaults filled in, oneof names set).
 */
export function loadProto(): ProtoGrpcType {
  if (!cached) {
    const definition = protoLoader.loadSync(PROTO_PATH, {
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    cached = grpc.loadPackageDefinition(definition) as unknown as ProtoGrpcType;
  }
  return cached;
}

/** Metadata keys of every agent call. */
export const AUTH_METADATA_KEY = 'authorization';
export const AGENT_METADATA_KEY = 'x-hangar-agent';
/** Trailing metadata of a follower coordinator's UNAVAILABLE answer: `HOST:PORT` of the leader to dial. */
export const LEADER_METADATA_KEY = 'hangar-leader';
