import type { Cluster, Redis } from 'ioredis';

/**
 * Either ioredis client the sidecar may run on: one server (standalone, or the master Sentinel names)
 * or a Redis Cluster. Cache code asks `isCluster` where the two differ (a script's keys must then share
 * one hash slot, and a pipeline must stay on one node).
 */
export type RedisClient = Redis | Cluster;
