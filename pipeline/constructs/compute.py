"""Compute environments (CPU- and memory-optimized) and the job queue, ProdQueue."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Acknowledgment, Annotations, Duration, Validations
from aws_cdk import aws_batch as batch
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from pipeline.instances import InstanceType, lookup

DEFAULT_MACHINE_IMAGE_TYPE = batch.EcsMachineImageType.ECS_AL2023
"""The ECS-optimized AMI family the compute environments launch (their Ec2Configuration
``imageType``). Pinned rather than left to Batch, whose default has been Amazon Linux 2, whose
standard support ended on 2026-06-30; Amazon Linux 2023's ``iptables`` is the nftables-backed
one, which the boothook below is tested against, as is the legacy one of Amazon Linux 2."""
_AMAZON_LINUX_2 = (batch.EcsMachineImageType.ECS_AL2, batch.EcsMachineImageType.ECS_AL2_NVIDIA)

IMDS_ADDRESS = "169.254.169.254"
IMDS_IPV6_ADDRESS = "fd00:ec2::254"

# AWS Batch runs ECS-EC2 jobs in host network mode ("Networking modes for AWS Batch jobs",
# AWS Batch User Guide): a container shares the instance's network stack, so the IMDSv2 hop
# limit does not separate it from the instance metadata service, and the instance role's
# credentials would be one request away. The firewall on each host therefore rejects metadata
# requests, over IPv4 and IPv6 (the launch template keeps the IPv6 endpoint off as well), from
# every uid but root. The ECS agent and Docker run as root and keep using the service; job
# containers run as JOB_USER_ID (the job definitions set `user`), and the task role
# credentials they do need come from the ECS agent's endpoint (169.254.170.2), which these
# rules leave alone. A cloud-boothook runs on every boot, before the ECS agent starts (its
# unit starts after cloud-init); a rule is inserted only when missing. It fails closed: if
# either rule cannot be put in place, the ECS agent is masked, so the instance never joins the
# cluster or takes a job, and the instance powers off, so it costs nothing while Batch
# launches another. Batch requires launch template user data in MIME multi-part format
# ("Launch template support", AWS Batch User Guide). What the hook prints goes where
# cloud-init's output goes: the instance's console output and /var/log/cloud-init-output.log.
IMDS_BLOCK_SCRIPT = f"""#!/bin/bash
# array-job-pipeline: job containers (host network mode) must not reach the instance role.
block() {{
  local rule=(OUTPUT --destination "$2" --match owner ! --uid-owner 0 --jump REJECT)
  "$1" --check "${{rule[@]}}" 2>/dev/null || "$1" --insert "${{rule[@]}}"
}}
if ! {{ block iptables {IMDS_ADDRESS} && block ip6tables {IMDS_IPV6_ADDRESS}; }}; then
  echo "array-job-pipeline: the metadata block did not install; this instance takes no job" >&2
  systemctl mask --now ecs.service
  poweroff
fi
"""


class PipelineCompute(Construct):
    """Two managed EC2 compute environments behind one job queue.

    The memory-optimized environment comes first in the queue: small jobs and JobC/JobD's
    32 GiB children land on the cheaper-per-GiB instances, and JobB's 32-vCPU children, which
    fit none of them, go to the CPU-optimized environment. Both scale to zero (minvCpus 0).
    Instances require IMDSv2 with a hop limit of 1, and their firewall rejects instance
    metadata requests (IPv4 and IPv6) from any uid but root, or the instance takes no job (see
    ``IMDS_BLOCK_SCRIPT``): Batch jobs run in host network mode, where the hop limit alone does
    not keep containers from the instance role.
    Jobs get their own roles through the ECS agent's credential endpoint.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        vpc_subnets: ec2.SubnetSelection | None,
        security_group: ec2.ISecurityGroup,
        queue_name: str,
        max_vcpus: int,
        spot: bool,
        cpu_instance_types: Sequence[str],
        memory_instance_types: Sequence[str],
        runnable_timeout: Duration,
        machine_image_type: batch.EcsMachineImageType = DEFAULT_MACHINE_IMAGE_TYPE,
    ) -> None:
        """
        :param machine_image_type: the ECS-optimized AMI family of the instances. Default:
            ``ECS_AL2023`` (see :data:`DEFAULT_MACHINE_IMAGE_TYPE`); an Amazon Linux 2 type
            warns at synth.
        """
        super().__init__(scope, construct_id)
        if machine_image_type in _AMAZON_LINUX_2:
            Annotations.of(self).add_warning_v2(
                "array-job-pipeline:amazon-linux-2",
                f"machine_image_type {machine_image_type.value}: Amazon Linux 2's standard "
                "support ended on 2026-06-30; use ECS_AL2023 (the default) unless a step needs "
                "Amazon Linux 2",
            )
        user_data = ec2.MultipartUserData()
        user_data.add_part(
            ec2.MultipartBody.from_raw_body(
                content_type='text/cloud-boothook; charset="utf-8"', body=IMDS_BLOCK_SCRIPT
            )
        )
        self.launch_template = launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            require_imdsv2=True,
            http_put_response_hop_limit=1,
            http_protocol_ipv6=False,  # off, and blocked on the host all the same
            user_data=user_data,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        30, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3
                    ),
                )
            ],
        )
        self.cpu_instance_types: tuple[InstanceType, ...] = lookup(cpu_instance_types)
        self.memory_instance_types: tuple[InstanceType, ...] = lookup(memory_instance_types)

        def environment(
            construct_id: str, instances: tuple[InstanceType, ...]
        ) -> batch.ManagedEc2EcsComputeEnvironment:
            # No compute_environment_name: a physical name would block the replacement that
            # CloudFormation needs when instance types change.
            return batch.ManagedEc2EcsComputeEnvironment(
                self,
                construct_id,
                vpc=vpc,
                vpc_subnets=vpc_subnets,
                security_groups=[security_group],
                instance_types=[ec2.InstanceType(i.name) for i in instances],
                use_optimal_instance_classes=False,
                minv_cpus=0,
                maxv_cpus=max_vcpus,
                spot=spot,
                allocation_strategy=(
                    batch.AllocationStrategy.SPOT_CAPACITY_OPTIMIZED
                    if spot
                    else batch.AllocationStrategy.BEST_FIT_PROGRESSIVE
                ),
                launch_template=launch_template,
                # Batch picks the latest AMI of this family (and, with the update below, moves
                # to newer ones); without an image type it would choose the family itself.
                images=[batch.EcsMachineImage(image_type=machine_image_type)],
                # Managed updates replace instances gradually instead of all at once.
                replace_compute_environment=False,
                terminate_on_update=False,
                update_to_latest_image_version=True,
            )

        self.memory_environment = environment("MemoryOptimized", self.memory_instance_types)
        self.cpu_environment = environment("CpuOptimized", self.cpu_instance_types)
        Validations.of(self).acknowledge(
            Acknowledgment(
                id="AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonEC2ContainerServiceforEC2Role]",
                reason="The ECS agent on Batch instances needs this AWS-maintained policy to "
                "register with the cluster, pull images and ship logs. Jobs use their own roles: "
                "they run in host network mode as a non-root uid, and each host's firewall "
                "rejects instance-metadata requests from any uid but root, so a job cannot read "
                "this role's credentials.",
            )
        )

        self.queue = batch.JobQueue(
            self,
            "Queue",
            job_queue_name=queue_name,
            compute_environments=[
                batch.OrderedComputeEnvironment(
                    compute_environment=self.memory_environment, order=1
                ),
                batch.OrderedComputeEnvironment(compute_environment=self.cpu_environment, order=2),
            ],
            # A job that can never be placed (misconfiguration) is cancelled with a reason
            # instead of waiting in RUNNABLE forever. Waiting for capacity is normal for a
            # 10,000-child array, so INSUFFICIENT_INSTANCE_CAPACITY is deliberately not here.
            job_state_time_limit_actions=[
                batch.JobStateTimeLimitAction(
                    max_time=runnable_timeout,
                    reason=reason,
                    action=batch.JobStateTimeLimitActionsAction.CANCEL,
                    state=batch.JobStateTimeLimitActionsState.RUNNABLE,
                )
                for reason in (
                    batch.JobStateTimeLimitActionsReason.JOB_RESOURCE_REQUIREMENT,
                    batch.JobStateTimeLimitActionsReason.COMPUTE_ENVIRONMENT_MAX_RESOURCE,
                )
            ],
        )

    @property
    def instance_types(self) -> tuple[InstanceType, ...]:
        """Every instance type a job on the queue may be placed on."""
        return self.memory_instance_types + self.cpu_instance_types
